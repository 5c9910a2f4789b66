package node

import (
	"github.com/umbra-e2ee/umbra/gateway"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	"github.com/umbra-e2ee/umbra/services/identity"
)

// builders start each role's service over its own store.
var builders = map[string]func(*deps) (*hosted, error){
	gateway.Identity: func(d *deps) (*hosted, error) {
		store, err := identity.OpenStore(dbPath(d, gateway.Identity))
		if err != nil {
			return nil, err
		}
		srv, err := identity.New(store, identity.Config{Issuer: d.cfg.Issuer}, d.log.Named(gateway.Identity))
		if err != nil {
			store.Close()
			return nil, err
		}
		d.identity = srv
		return &hosted{
			name:     gateway.Identity,
			grpcName: identityv1.IdentityService_ServiceDesc.ServiceName,
			register: srv.Register,
			policies: identity.Policies(),
			close:    store.Close,
		}, nil
	},
}
