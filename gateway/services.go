package gateway

import (
	"context"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// Service names, as roles and as keys of Config.Upstreams.
const (
	Identity  = "identity"
	Card      = "card"
	Backup    = "backup"
	Group     = "group"
	Messaging = "messaging"
)

type registerFunc func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error

// upstream describes one service behind the gateway.
type upstream struct {
	name     string
	grpcName string // the name the service's health status is reported under
	register registerFunc
}

var upstreams = []upstream{
	{Identity, identityv1.IdentityService_ServiceDesc.ServiceName, identityv1.RegisterIdentityServiceHandler},
}

// Services lists the services the gateway fronts, in a stable order.
func Services() []string {
	out := make([]string, len(upstreams))
	for i, u := range upstreams {
		out[i] = u.name
	}
	return out
}
