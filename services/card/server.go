package card

import (
	"go.uber.org/zap"
	"google.golang.org/grpc"

	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// Server implements umbra.card.v1.CardService. Every RPC answers Unimplemented until the
// service is built.
type Server struct {
	cardv1.UnimplementedCardServiceServer
	log *zap.Logger
}

var _ cardv1.CardServiceServer = (*Server)(nil)

// New returns a Server. A nil log discards logs.
func New(log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	return &Server{log: log}
}

// Register registers the service on g.
func (s *Server) Register(g *grpc.Server) { cardv1.RegisterCardServiceServer(g, s) }
