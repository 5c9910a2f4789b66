package messaging

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// sweepLimit bounds the work of one sweep transaction (entries plus their recipients).
const sweepLimit = 10000

// sendStreamDrainLimit bounds how long Run keeps the committer for SendStreams that
// are draining after ctx ended. They need a moment (a batch or two); only a stream
// whose client reads no replies takes longer, and the gRPC server's own grace period
// ends it anyway.
const sendStreamDrainLimit = 10 * time.Second

// Run runs the committer, which makes every write, and the retention sweeper, until
// ctx ends. Then it ends the open Subscribe streams, lets the open SendStreams drain
// (each takes no more requests, and answers those it took), commits what is queued
// already, and returns. The store may be closed once it has returned.
func (s *Server) Run(ctx context.Context) {
	s.runOnce.Do(func() {
		commitCtx, stopCommit := context.WithCancel(context.Background())
		defer stopCommit()
		var wg sync.WaitGroup
		wg.Go(func() { s.commit.run(commitCtx) })
		wg.Go(func() { s.sweepLoop(ctx) })
		wg.Go(func() { s.store.Watch(ctx, s.notify.watched, s.notify.bump) })
		<-ctx.Done()
		close(s.closing)
		select {
		case <-s.sendStreams.drained():
		case <-time.After(sendStreamDrainLimit):
			s.log.Warn("send streams still open after the drain limit; stopping the committer", zap.Duration("limit", sendStreamDrainLimit))
		}
		stopCommit()
		wg.Wait()
	})
}

func (s *Server) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("retention sweep", zap.Error(err))
			}
		}
	}
}

// Sweep deletes every message and event whose retention has ended, in bounded
// transactions, and returns how many it deleted. The sweeper calls it every
// SweepInterval.
func (s *Server) Sweep(ctx context.Context) (int, error) {
	now, total := s.now(), 0
	for {
		n, more, err := s.commit.sweep(ctx, now, sweepLimit)
		total += n
		if err != nil || !more {
			if total > 0 {
				s.log.Info("retention sweep", zap.Int("deleted", total), zap.Error(err))
			}
			return total, err
		}
	}
}
