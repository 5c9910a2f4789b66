package grpcserver

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// NotServingReasonHeader is the response header of a health check of a service that is
// NOT_SERVING for a reason the server knows (a store whose writes fail): the gateway's
// /readyz shows it. The reason never holds a path or an error's text, only what an
// operator reads on a public probe.
const NotServingReasonHeader = "umbra-not-serving-reason"

// healthServer is gRPC's health service with reasons for NOT_SERVING.
type healthServer struct {
	*health.Server
	mu      sync.Mutex
	reasons map[string]string
}

func (h *healthServer) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	resp, err := h.Server.Check(ctx, req)
	if err != nil || resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
		return resp, err
	}
	h.mu.Lock()
	reason := h.reasons[req.GetService()]
	h.mu.Unlock()
	if reason != "" {
		grpc.SetHeader(ctx, metadata.Pairs(NotServingReasonHeader, reason))
	}
	return resp, nil
}

// SetNotServing turns service NOT_SERVING, for reason (shown by /readyz), until
// SetServing. After a shutdown has begun it changes nothing.
func (s *Server) SetNotServing(service, reason string) {
	s.health.mu.Lock()
	s.health.reasons[service] = reason
	s.health.mu.Unlock()
	s.Health.SetServingStatus(service, healthpb.HealthCheckResponse_NOT_SERVING)
}

// SetServing turns service SERVING again and forgets why it was not. After a shutdown
// has begun it changes nothing.
func (s *Server) SetServing(service string) {
	s.health.mu.Lock()
	delete(s.health.reasons, service)
	s.health.mu.Unlock()
	s.Health.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
}
