package gateway

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// ServeMetrics serves h at GET /metrics, and nothing else, on lis until ctx ends.
//
// Metrics have a listener of their own, never the API's: the gateway's listener is
// public, and the metrics describe the whole deployment's traffic (call rates and
// error codes per method). On their own port the network decides who scrapes them (a
// NetworkPolicy, loopback in `umbra dev`), and no credential has to be copied into a
// Prometheus configuration.
func ServeMetrics(ctx context.Context, lis net.Listener, h http.Handler) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
