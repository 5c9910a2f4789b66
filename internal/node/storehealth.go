package node

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
)

// writeFailuresMetric counts the writes each store failed to make durable.
func writeFailuresMetric(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	m := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "umbra_storage_write_failures_total",
		Help: "Writes that failed in storage (their commit; nothing of them was written), by store and reason: no_space (a full disk or quota) or io.",
	}, []string{"store", "reason"})
	return m, reg.Register(m)
}

// watchStore ties a hosted service's store to its readiness: while the store's last
// write failed in storage, the service's gRPC health is NOT_SERVING with the store named
// as the reason (the gateway's /readyz shows it), and it turns SERVING again by itself
// once a write succeeds, a client's or the store's own probe (boltdb.Watch).
func watchStore(s *hosted, srv *grpcserver.Server, failures *prometheus.CounterVec, probe time.Duration, log *zap.Logger) {
	file := s.name + ".db"
	for _, r := range []string{boltdb.ReasonNoSpace, boltdb.ReasonIO} {
		failures.WithLabelValues(s.name, r) // at zero from the start, for alerts on rate()
	}
	s.db.Watch(boltdb.Watch{
		Failed: func(f boltdb.WriteFailure) { failures.WithLabelValues(s.name, f.Reason).Inc() },
		Changed: func(f *boltdb.WriteFailure) {
			if f == nil {
				log.Info("store writes succeed again: the service is ready", zap.String("store", file))
				srv.SetServing(s.grpcName)
				return
			}
			log.Error("store writes are failing: the service is not ready until one succeeds",
				zap.String("store", file), zap.String("reason", f.Reason), zap.Error(f.Err))
			srv.SetNotServing(s.grpcName, notServingReason(file, f.Reason))
		},
		ProbeInterval: probe,
	})
}

// notServingReason says, for /readyz, why a store makes its service not ready: no path
// and no error text, which stay in the log.
func notServingReason(file, reason string) string {
	if reason == boltdb.ReasonNoSpace {
		return file + ": writes fail: no space left (the disk or the quota is full)"
	}
	return file + ": writes fail: an I/O error (see the service's log)"
}

// DefaultDatabaseProbeInterval is how often the readiness of a store in PostgreSQL is
// checked when Config.StoreProbeInterval is 0.
const DefaultDatabaseProbeInterval = 2 * time.Second

// watchDatabase returns the loop that ties a service whose store is in PostgreSQL to
// its database: every probe interval it checks that the database answers and accepts
// writes (hosted.ready); while it does not, the service's gRPC health is NOT_SERVING
// with the reason (the gateway's /readyz shows it), and it turns SERVING again by
// itself once the database is back.
func watchDatabase(h *hosted, srv *grpcserver.Server, probe time.Duration, log *zap.Logger) func(ctx context.Context) {
	if probe <= 0 {
		probe = DefaultDatabaseProbeInterval
	}
	return func(ctx context.Context) {
		failing := false
		tick := time.NewTicker(probe)
		defer tick.Stop()
		for {
			check, cancel := context.WithTimeout(ctx, max(probe, 3*time.Second))
			err := h.ready(check)
			cancel()
			if ctx.Err() != nil {
				return
			}
			switch {
			case err != nil && !failing:
				log.Error("the store's database is not ready: the service is not ready until it is", zap.Error(err))
				srv.SetNotServing(h.grpcName, err.Error())
				failing = true
			case err == nil && failing:
				log.Info("the store's database is ready again: the service is ready")
				srv.SetServing(h.grpcName)
				failing = false
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}
}
