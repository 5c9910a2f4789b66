package node

import (
	"errors"
	"fmt"

	"github.com/umbra-e2ee/umbra/gateway"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
)

// buildBackup starts the backup service over backup.db, with the process's server
// secret, delivering its events (an erased backup) through the messaging service.
func buildBackup(d *deps) (*hosted, error) {
	log := d.log.Named(gateway.Backup)
	store, err := backup.OpenStore(dbPath(d, gateway.Backup))
	if err != nil {
		return nil, err
	}
	var events backup.Events // none: events wait in backup.db's outbox
	closeEvents := func() error { return nil }
	if d.cfg.MessagingPeer.Addr != "" {
		conn, err := dialPeer(d, d.cfg.MessagingPeer)
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("messaging service: %w", err)
		}
		events, closeEvents = messagingv1.NewMessagingServiceClient(conn), conn.Close
	} else {
		log.Warn("no messaging service address: backup events wait in the outbox until one is configured")
	}
	srv, err := backup.New(store, d.cfg.Backup, events, log)
	if err != nil {
		closeEvents()
		store.Close()
		return nil, err
	}
	return &hosted{
		name:     gateway.Backup,
		grpcName: backupv1.BackupService_ServiceDesc.ServiceName,
		register: srv.Register,
		policies: backup.Policies(),
		db:       store.DB(),
		close:    func() error { return errors.Join(closeEvents(), store.Close()) },
		run:      srv.Run,
	}, nil
}
