// Package backup implements umbra.backup.v1.BackupService: private-key backups
// under a password hardened by an oblivious PRF, with a guess-limited restore.
//
// Until issue 6 lands every RPC answers Unimplemented; the policy table is complete
// already, so nothing is reachable without the credential it will need.
package backup
