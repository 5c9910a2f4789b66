package node

import (
	"encoding/json"
	"net/http"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/runtest"
	"github.com/umbra-e2ee/umbra/internal/servicetest"
)

const testAdmin = "admin-credential-for-tests"

// runAll runs every role and the gateway, as `umbra dev` does, until the test ends, and
// returns the node's addresses.
func runAll(t *testing.T, tune func(*Config)) Addrs {
	t.Helper()
	cfg := testConfig(t.TempDir())
	cfg.Gateway = &gateway.Config{Addr: "127.0.0.1:0"}
	if tune != nil {
		tune(&cfg)
	}
	return runtest.MustStart(t, "Run", running(cfg, zaptest.NewLogger(t))).Ready
}

// call makes one REST call and returns the status and the decoded JSON body.
func call(t *testing.T, method, url, cred string, body any) (int, map[string]any) {
	t.Helper()
	if body == nil {
		return servicetest.REST(t, url, method, "", cred, "")
	}
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return servicetest.REST(t, url, method, "", cred, string(b))
}

// TestRevocationHoldsAtOnceInOneProcess: in a process that hosts the identity service
// with the others (`umbra dev`, `umbra serve all`), the README's walk-through holds as
// written: right after tokens:revoke, whoami and every other service answer 401, with
// no wait for a revocation feed.
func TestRevocationHoldsAtOnceInOneProcess(t *testing.T) {
	t.Parallel()
	addrs := runAll(t, nil)
	base := "http://" + addrs.Gateway
	code, app := call(t, "POST", base+"/v1/apps", testAdmin, map[string]any{"displayName": "test"})
	if code != http.StatusOK {
		t.Fatalf("create app: %d %v", code, app)
	}
	key := app["apiKey"].(string)
	code, ids := call(t, "POST", base+"/v1/identities:resolve", key, map[string]any{"uids": []string{"alice"}})
	if code != http.StatusOK {
		t.Fatalf("resolve: %d %v", code, ids)
	}
	alice := ids["users"].(map[string]any)["alice"].(string)
	code, tok := call(t, "POST", base+"/v1/tokens", key, map[string]any{"identity": alice, "ttl": "900s"})
	if code != http.StatusOK {
		t.Fatalf("token: %d %v", code, tok)
	}
	token := tok["accessToken"].(string)
	for _, path := range []string{"/v1/whoami", "/v1/conversations", "/v1/groups"} {
		if code, body := call(t, "GET", base+path, token, nil); code != http.StatusOK {
			t.Fatalf("%s before the revocation: %d %v", path, code, body)
		}
	}
	if code, body := call(t, "POST", base+"/v1/tokens:revoke", key, map[string]any{"identity": alice}); code != http.StatusOK {
		t.Fatalf("revoke: %d %v", code, body)
	}
	for _, path := range []string{"/v1/whoami", "/v1/conversations", "/v1/groups"} {
		if code, body := call(t, "GET", base+path, token, nil); code != http.StatusUnauthorized {
			t.Errorf("%s right after the revocation: %d %v; want 401", path, code, body)
		}
	}
}
