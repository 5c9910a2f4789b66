package gateway

import (
	"context"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
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
	{Card, cardv1.CardService_ServiceDesc.ServiceName, cardv1.RegisterCardServiceHandler},
	{Backup, backupv1.BackupService_ServiceDesc.ServiceName, backupv1.RegisterBackupServiceHandler},
	{Group, groupv1.GroupService_ServiceDesc.ServiceName, groupv1.RegisterGroupServiceHandler},
	{Messaging, messagingv1.MessagingService_ServiceDesc.ServiceName, messagingv1.RegisterMessagingServiceHandler},
}

// Services lists the services the gateway fronts, in a stable order.
func Services() []string {
	out := make([]string, len(upstreams))
	for i, u := range upstreams {
		out[i] = u.name
	}
	return out
}
