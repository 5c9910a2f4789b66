package gateway_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/umbra-e2ee/umbra/gateway"
)

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// TestMetricsHaveTheirOwnListener: the gateway's listener, which is public, never
// serves /metrics; Run serves them on MetricsAddr, and only them there.
func TestMetricsHaveTheirOwnListener(t *testing.T) {
	t.Parallel()
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "umbra_test_metric 1\n")
	})
	cfg := gateway.Config{
		Addr:        freeAddr(t),
		MetricsAddr: freeAddr(t),
		Metrics:     metrics,
		Upstreams:   upstreamsAt(closedAddr(t)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gateway.Run(ctx, cfg, zaptest.NewLogger(t)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return within 15 s of its context ending")
		}
	})
	get := func(url string) (int, string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get(url)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp.StatusCode, string(b)
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v", url, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if code, body := get("http://" + cfg.MetricsAddr + "/metrics"); code != http.StatusOK || !strings.Contains(body, "umbra_test_metric") {
		t.Errorf("/metrics on MetricsAddr: %d %q; want 200 with the metrics", code, body)
	}
	if code, body := get("http://" + cfg.Addr + "/metrics"); code != http.StatusNotFound || strings.Contains(body, "umbra_test_metric") {
		t.Errorf("/metrics on the gateway's listener: %d %q; want 404", code, body)
	}
	if code, _ := get("http://" + cfg.MetricsAddr + "/healthz"); code != http.StatusNotFound {
		t.Errorf("/healthz on the metrics listener: %d; want 404 (it serves metrics only)", code)
	}
	// The handler without Run serves no metrics either, whatever Metrics says.
	base := startGateway(t, cfg)
	if r := send(t, "GET", base+"/metrics", "", ""); r.status != http.StatusNotFound {
		t.Errorf("/metrics on the handler: %d; want 404", r.status)
	}
}
