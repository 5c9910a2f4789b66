package node

import (
	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/gateway"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/group"
)

// buildGroup starts the group service over group.db, or over its schema in PostgreSQL
// when the process has a --store. It reaches the card service (the members' active
// cards, the card feed) and the messaging service (events into members' streams) as a
// peer, with the service token. Without a card service address commits are refused as
// UNAVAILABLE; without a messaging address events wait in the outbox.
func buildGroup(d *deps) (*hosted, error) {
	h, log, store, err := openRole[group.Store](d, gateway.Group, groupv1.GroupService_ServiceDesc.ServiceName, group.Policies(),
		group.OpenPostgresStore, group.OpenBoltStore)
	if err != nil {
		return nil, err
	}
	release := closers{store.Close}
	cards, err := optionalPeer(d, log, "card", d.cfg.Peers.Card, &release, "no card service address: epoch commits are refused and card changes are not followed until one is configured",
		func(conn *grpc.ClientConn) group.Cards { return cardv1.NewCardServiceClient(conn) })
	if err != nil {
		return nil, err
	}
	events, err := optionalPeer(d, log, "messaging", d.cfg.Peers.Messaging, &release, "no messaging service address: group events wait in the outbox until one is configured",
		func(conn *grpc.ClientConn) group.Events { return messagingv1.NewMessagingServiceClient(conn) })
	if err != nil {
		return nil, err
	}
	srv, err := group.New(store, cards, events, d.cfg.Group, log)
	return started(h, release, srv, err)
}
