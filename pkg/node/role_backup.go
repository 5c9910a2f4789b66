package node

import (
	"github.com/umbra-e2ee/umbra/gateway"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
)

// buildBackup starts the backup service. It has its API and access policies but no
// behaviour yet: every RPC answers Unimplemented.
func buildBackup(d *deps) (*hosted, error) {
	srv := backup.New(d.log.Named(gateway.Backup))
	return unbuilt(gateway.Backup, backupv1.BackupService_ServiceDesc.ServiceName, srv.Register, backup.Policies()), nil
}
