package backup

import (
	"go.uber.org/zap"
	"google.golang.org/grpc"

	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
)

// Server implements umbra.backup.v1.BackupService. Every RPC answers Unimplemented until the
// service is built.
type Server struct {
	backupv1.UnimplementedBackupServiceServer
	log *zap.Logger
}

var _ backupv1.BackupServiceServer = (*Server)(nil)

// New returns a Server. A nil log discards logs.
func New(log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	return &Server{log: log}
}

// Register registers the service on g.
func (s *Server) Register(g *grpc.Server) { backupv1.RegisterBackupServiceServer(g, s) }
