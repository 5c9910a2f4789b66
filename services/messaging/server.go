package messaging

import (
	"go.uber.org/zap"
	"google.golang.org/grpc"

	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// Server implements umbra.messaging.v1.MessagingService. Every RPC answers Unimplemented until the
// service is built.
type Server struct {
	messagingv1.UnimplementedMessagingServiceServer
	log *zap.Logger
}

var _ messagingv1.MessagingServiceServer = (*Server)(nil)

// New returns a Server. A nil log discards logs.
func New(log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	return &Server{log: log}
}

// Register registers the service on g.
func (s *Server) Register(g *grpc.Server) { messagingv1.RegisterMessagingServiceServer(g, s) }
