package node

import (
	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/gateway"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
)

// buildBackup starts the backup service over backup.db, or its schema in PostgreSQL,
// with the process's server secret, delivering its events (an erased backup) through
// the messaging service.
func buildBackup(d *deps) (*hosted, error) {
	h, log, store, err := openRole[backup.Store](d, gateway.Backup, backupv1.BackupService_ServiceDesc.ServiceName, backup.Policies(),
		backup.OpenPostgresStore, backup.OpenBoltStore)
	if err != nil {
		return nil, err
	}
	release := closers{store.Close}
	events, err := optionalPeer(d, log, "messaging", d.cfg.Peers.Messaging, &release, "no messaging service address: backup events wait in the outbox until one is configured",
		func(conn *grpc.ClientConn) backup.Events { return messagingv1.NewMessagingServiceClient(conn) })
	if err != nil {
		return nil, err
	}
	srv, err := backup.New(store, events, d.cfg.Backup, log)
	return started(h, release, srv, err)
}
