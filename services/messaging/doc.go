// Package messaging implements umbra.messaging.v1.MessagingService: durable,
// ordered store-and-forward of ciphertext, with resumable subscriptions.
//
// Until issue 4 lands every RPC answers Unimplemented; the policy table is complete
// already, so nothing is reachable without the credential it will need.
package messaging
