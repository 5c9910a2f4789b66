package node

import (
	"errors"
	"fmt"

	"github.com/umbra-e2ee/umbra/gateway"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/group"
)

// buildGroup starts the group service over group.db. It reaches the card service (the
// members' active cards, the card feed) and the messaging service (events into members'
// streams) as a peer, with the service token.
func buildGroup(d *deps) (*hosted, error) {
	store, err := group.OpenStore(dbPath(d, gateway.Group))
	if err != nil {
		return nil, err
	}
	cardConn, err := dialPeer(d, d.cfg.Card)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("group: card service: %w", err)
	}
	msgConn, err := dialPeer(d, d.cfg.MessagingPeer)
	if err != nil {
		cardConn.Close()
		store.Close()
		return nil, fmt.Errorf("group: messaging service: %w", err)
	}
	closeAll := func() error { return errors.Join(msgConn.Close(), cardConn.Close(), store.Close()) }
	srv, err := group.NewServer(store, cardv1.NewCardServiceClient(cardConn), messagingv1.NewMessagingServiceClient(msgConn),
		d.cfg.GroupTuning, d.log.Named(gateway.Group))
	if err != nil {
		closeAll()
		return nil, err
	}
	return &hosted{
		name:     gateway.Group,
		grpcName: groupv1.GroupService_ServiceDesc.ServiceName,
		register: srv.Register,
		policies: group.Policies(),
		db:       store.DB(),
		close:    closeAll,
		run:      srv.Run,
	}, nil
}
