package node

import (
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
	conn, err := optionalPeer(d, log, "messaging", d.cfg.Peers.Messaging, &release, "no messaging service address: backup events wait in the outbox until one is configured")
	if err != nil {
		return nil, err
	}
	var events backup.Events // none: events wait in backup.db's outbox
	if conn != nil {
		events = messagingv1.NewMessagingServiceClient(conn)
	}
	srv, err := backup.New(store, events, d.cfg.Backup, log)
	if err != nil {
		release.close()
		return nil, err
	}
	h.register, h.close, h.run = srv.Register, release.close, srv.Run
	return h, nil
}
