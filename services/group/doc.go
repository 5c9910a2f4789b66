// Package group implements umbra.group.v1.GroupService: groups, membership, roles,
// and the epochs whose keys members wrap to each other's cards.
//
// Until issue 5 lands every RPC answers Unimplemented; the policy table is complete
// already, so nothing is reachable without the credential it will need.
package group
