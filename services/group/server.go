package group

import (
	"go.uber.org/zap"
	"google.golang.org/grpc"

	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// Server implements umbra.group.v1.GroupService. Every RPC answers Unimplemented until the
// service is built.
type Server struct {
	groupv1.UnimplementedGroupServiceServer
	log *zap.Logger
}

var _ groupv1.GroupServiceServer = (*Server)(nil)

// New returns a Server. A nil log discards logs.
func New(log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	return &Server{log: log}
}

// Register registers the service on g.
func (s *Server) Register(g *grpc.Server) { groupv1.RegisterGroupServiceServer(g, s) }
