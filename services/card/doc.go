// Package card implements umbra.card.v1.CardService, the public-key directory:
// cards published by clients, their history, and the service's counter-signature.
//
// Until issue 3 lands every RPC answers Unimplemented; the policy table is complete
// already, so nothing is reachable without the credential it will need.
package card
