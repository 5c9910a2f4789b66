package grpcserver

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

type metrics struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// refused counts the calls the tap handle refused from their headers, before they
	// reached the interceptors that count calls. By code only: the method of such a
	// call is whatever its unauthenticated client wrote.
	refused *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umbra_grpc_calls_total",
			Help: "gRPC calls handled, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "umbra_grpc_call_duration_seconds",
			Help:    "Time to handle a gRPC call (a stream's whole life for streams).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umbra_grpc_refused_before_read_total",
			Help: "gRPC calls refused from their headers before their body was read (no credential of the right shape, or too many failed credentials from their source), by status code.",
		}, []string{"code"}),
	}
	if reg == nil {
		return m, nil
	}
	// A second server on the same registry (the gateway's own gRPC port beside the
	// services') counts into the collectors the first registered.
	register := func(c prometheus.Collector) (prometheus.Collector, error) {
		err := reg.Register(c)
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector, nil
		}
		return c, err
	}
	var err error
	var c prometheus.Collector
	if c, err = register(m.calls); err != nil {
		return nil, err
	}
	m.calls = c.(*prometheus.CounterVec)
	if c, err = register(m.duration); err != nil {
		return nil, err
	}
	m.duration = c.(*prometheus.HistogramVec)
	if c, err = register(m.refused); err != nil {
		return nil, err
	}
	m.refused = c.(*prometheus.CounterVec)
	return m, nil
}

// tap wraps the tap handle h so that the calls it refuses are counted.
func (m *metrics) tap(h tap.ServerInHandle) tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		ctx, err := h(ctx, info)
		if err != nil {
			m.refused.WithLabelValues(status.Code(err).String()).Inc()
		}
		return ctx, err
	}
}

func (m *metrics) observe(method string, code codes.Code, d time.Duration) {
	m.calls.WithLabelValues(method, code.String()).Inc()
	m.duration.WithLabelValues(method).Observe(d.Seconds())
}
