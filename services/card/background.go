package card

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// Run appends new card events to the key transparency log and publishes a checkpoint
// at once (the first start after an upgrade appends every earlier event: the
// migration), then every CheckpointInterval, until ctx ends.
func (s *Server) Run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		if _, err := s.PublishCheckpoint(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("key transparency: publishing a checkpoint failed; retrying at the next interval", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
