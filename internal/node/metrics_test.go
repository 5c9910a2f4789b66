package node

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestMetricsOnTheirOwnListener: a node with the gateway (`umbra dev`, `serve all`)
// serves /metrics on MetricsAddr only, with the services' gRPC metrics; the gateway's
// listener answers 404 there.
func TestMetricsOnTheirOwnListener(t *testing.T) {
	t.Parallel()
	addrs := runAll(t, func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	if addrs.Metrics == "" {
		t.Fatal("no metrics address reported")
	}
	// One call, so that the gRPC metrics have a sample: to a public method, since a call
	// without a credential to any other is refused before it reaches the interceptors
	// that count calls.
	if code, body := call(t, "GET", "http://"+addrs.Gateway+"/.well-known/jwks.json", "", nil); code != http.StatusOK {
		t.Fatalf("the signing keys: %d %v", code, body)
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
	// A call without a credential is refused before it is read, and counted apart.
	if code, body := call(t, "GET", "http://"+addrs.Gateway+"/v1/whoami", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("whoami without a token: %d %v", code, body)
	}
	code, body := get("http://" + addrs.Metrics + "/metrics")
	if code != http.StatusOK || !strings.Contains(body, "umbra_grpc_calls_total") {
		t.Errorf("/metrics on MetricsAddr: %d\n%.300s", code, body)
	}
	if !strings.Contains(body, `umbra_grpc_refused_before_read_total{code="Unauthenticated"} 1`) {
		t.Errorf("/metrics does not count the call refused before it was read:\n%s", grepLines(body, "umbra_grpc_refused"))
	}
	if code, _ := get("http://" + addrs.Gateway + "/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on the gateway's listener: %d; want 404", code)
	}
}
