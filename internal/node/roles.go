package node

import (
	"context"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/pgdb"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
	"github.com/umbra-e2ee/umbra/services/card"
	"github.com/umbra-e2ee/umbra/services/group"
	"github.com/umbra-e2ee/umbra/services/identity"
	"github.com/umbra-e2ee/umbra/services/messaging"
)

// openTimeout bounds the opening of a store in PostgreSQL: connecting, checking, and
// migrating (which may wait for another replica's migration).
const openTimeout = 2 * time.Minute

// openRole is how every builder starts. It returns h, the hosted service name (gRPC
// service grpcName, access table policies), the service's logger, and its store S:
// in PostgreSQL with pg when the process has a --store (h then asks its pool whether
// the database answers), else the service's bbolt file in the data folder with bolt (h
// then backs it up online). Each engine's store implements S (each service declares so).
func openRole[S any, P interface{ DB() *pgdb.DB }, B interface{ DB() *boltdb.DB }](d *deps, name, grpcName string, policies auth.Table,
	pg func(ctx context.Context, url string, log *zap.Logger) (P, error), bolt func(path string) (B, error)) (*hosted, *zap.Logger, S, error) {
	log := d.log.Named(name)
	h := &hosted{name: name, grpcName: grpcName, policies: policies}
	var store any
	if d.cfg.Store != "" {
		ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
		defer cancel()
		s, err := pg(ctx, d.cfg.Store, log)
		if err != nil {
			return nil, nil, *new(S), err
		}
		store, h.ready = s, s.DB().Ready
	} else {
		s, err := bolt(dbPath(d, h.name))
		if err != nil {
			return nil, nil, *new(S), err
		}
		store, h.db = s, s.DB()
	}
	return h, log, store.(S), nil
}

// started completes h with the service srv that its New returned (with err):
// registered on the gRPC server, its Run (when it has background work) started with
// the server, and release closed when h closes; when New failed, release is closed now
// and err returned.
func started[S interface{ Register(grpc.ServiceRegistrar) }](h *hosted, release closers, srv S, err error) (*hosted, error) {
	if err != nil {
		release.close()
		return nil, err
	}
	h.register, h.close = srv.Register, release.close
	if r, ok := any(srv).(interface{ Run(ctx context.Context) }); ok {
		h.run = r.Run
	}
	return h, nil
}

// builders start each role's service over its own store.
var builders = map[string]func(*deps) (*hosted, error){
	gateway.Identity: func(d *deps) (*hosted, error) {
		h, log, store, err := openRole[identity.Store](d, gateway.Identity, identityv1.IdentityService_ServiceDesc.ServiceName, identity.Policies(),
			identity.OpenPostgresStore, identity.OpenBoltStore)
		if err != nil {
			return nil, err
		}
		srv, err := identity.New(store, identity.Config{Issuer: d.cfg.Issuer}, log)
		if err == nil {
			d.identity = srv
		}
		return started(h, closers{store.Close}, srv, err)
	},
	gateway.Card: func(d *deps) (*hosted, error) {
		h, log, store, err := openRole[card.Store](d, gateway.Card, cardv1.CardService_ServiceDesc.ServiceName, card.Policies(),
			card.OpenPostgresStore, card.OpenBoltStore)
		if err != nil {
			return nil, err
		}
		ccfg := d.cfg.Card
		if ccfg.Grants == nil {
			ccfg.Grants = d.tokens
		}
		srv, err := card.New(store, ccfg, log)
		return started(h, closers{store.Close}, srv, err)
	},
	gateway.Backup: buildBackup,
	gateway.Group:  buildGroup,
	gateway.Messaging: func(d *deps) (*hosted, error) {
		h, log, store, err := openRole[messaging.Store](d, gateway.Messaging, messagingv1.MessagingService_ServiceDesc.ServiceName, messaging.Policies(), func(ctx context.Context, url string, log *zap.Logger) (*messaging.PostgresStore, error) {
			return messaging.OpenPostgresStore(ctx, url, messaging.PostgresOptions{}, log)
		}, func(path string) (*messaging.BoltStore, error) {
			return messaging.OpenBoltStore(path, messaging.StoreOptions{})
		})
		if err != nil {
			return nil, err
		}
		release := closers{store.Close}
		groups, err := optionalPeer(d, log, "group", d.cfg.Peers.Group, &release, "no group service address: group conversations are refused",
			func(conn *grpc.ClientConn) messaging.Groups {
				return messaging.GroupClient{Client: groupv1.NewGroupServiceClient(conn)}
			})
		if err != nil {
			return nil, err
		}
		cards, err := optionalPeer(d, log, "card", d.cfg.Peers.Card, &release, "no card service address: ENCRYPTED messages are refused (their sender card cannot be checked)",
			func(conn *grpc.ClientConn) messaging.Cards {
				return messaging.CardClient{Client: cardv1.NewCardServiceClient(conn)}
			})
		if err != nil {
			return nil, err
		}
		mcfg := d.cfg.Messaging
		if mcfg.Revocations == nil {
			mcfg.Revocations = d.revocations
		}
		srv, err := messaging.New(store, cards, groups, mcfg, log)
		return started(h, release, srv, err)
	},
}

// Policies are the access tables of every service, merged: what the gateway's gRPC
// proxy needs to know which methods it may forward.
func Policies() auth.Table {
	t, err := auth.Merge(identity.Policies(), card.Policies(), backup.Policies(), group.Policies(), messaging.Policies())
	if err != nil {
		panic(err) // the tables are code: a clash is a programming error
	}
	return t
}
