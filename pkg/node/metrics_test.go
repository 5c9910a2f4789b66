package node

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestMetricsOnTheirOwnListener: a node with the gateway (`umbra dev`, `serve all`)
// serves /metrics on MetricsAddr only, with the services' gRPC metrics; the gateway's
// listener answers 404 there.
func TestMetricsOnTheirOwnListener(t *testing.T) {
	addrs := runAll(t, func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	if addrs.Metrics == "" {
		t.Fatal("no metrics address reported")
	}
	// One call, so that the gRPC metrics have a sample.
	if code, body := call(t, "GET", "http://"+addrs.Gateway+"/v1/whoami", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("whoami without a token: %d %v", code, body)
	}
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("http://" + addrs.Metrics + "/metrics"); code != http.StatusOK || !strings.Contains(body, "umbra_grpc_calls_total") {
		t.Errorf("/metrics on MetricsAddr: %d\n%.300s", code, body)
	}
	if code, _ := get("http://" + addrs.Gateway + "/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on the gateway's listener: %d; want 404", code)
	}
}
