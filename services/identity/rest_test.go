package identity

import (
	"net/http"
	"strings"
	"testing"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
)

// rest sends one request to the gateway in front of the service and decodes the JSON
// answer.
func (e *env) rest(t testing.TB, method, path, bearer, body string) (int, map[string]any) {
	t.Helper()
	return servicetest.REST(t, e.httpURL, method, path, bearer, body)
}

// TestRESTFlow walks the identity service's REST routes as an app backend and a client
// would, with protojson's camelCase names.
func TestRESTFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	code, app := e.rest(t, "POST", "/v1/apps", testAdmin, `{"displayName": "rest app"}`)
	if code != http.StatusOK {
		t.Fatalf("create app: %d %v", code, app)
	}
	key, _ := app["apiKey"].(string)
	appID, _ := app["app"].(map[string]any)["appId"].(string)
	code, got := e.rest(t, "GET", "/v1/apps/"+appID, testAdmin, "")
	if code != http.StatusOK || got["app"].(map[string]any)["displayName"] != "rest app" {
		t.Fatalf("get app: %d %v", code, got)
	}
	code, ids := e.rest(t, "POST", "/v1/identities:resolve", key, `{"uids": ["alice"], "guids": ["team"]}`)
	if code != http.StatusOK {
		t.Fatalf("resolve: %d %v", code, ids)
	}
	alice := ids["users"].(map[string]any)["alice"].(string)
	if g := ids["groups"].(map[string]any)["team"].(string); !strings.HasPrefix(g, "g_") {
		t.Errorf("group identity %q", g)
	}
	code, tok := e.rest(t, "POST", "/v1/tokens", key, `{"identity": "`+alice+`", "ttl": "120s"}`)
	if code != http.StatusOK {
		t.Fatalf("issue token: %d %v", code, tok)
	}
	access := tok["accessToken"].(string)
	code, who := e.rest(t, "GET", "/v1/whoami", access, "")
	if code != http.StatusOK || who["identity"] != alice || who["appId"] != appID {
		t.Fatalf("whoami: %d %v", code, who)
	}
	code, keys := e.rest(t, "GET", "/v1/signing-keys", "", "")
	if code != http.StatusOK || len(keys["keys"].([]any)) != 1 {
		t.Fatalf("signing keys: %d %v", code, keys)
	}
	code, rev := e.rest(t, "POST", "/v1/tokens:revoke", key, `{"identity": "`+alice+`"}`)
	if code != http.StatusOK || rev["revokedBefore"] == nil {
		t.Fatalf("revoke: %d %v", code, rev)
	}
	if code, body := e.rest(t, "GET", "/v1/whoami", access, ""); code != http.StatusUnauthorized {
		t.Errorf("whoami after revocation: %d %v", code, body)
	}
}

// TestRESTBadRequests: each refusal has the right HTTP status, says what was wrong, and
// writes nothing.
func TestRESTBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, key := e.newApp(t, "A")
	alice := e.user(t, key, "alice")
	tok := e.token(t, key, alice)
	cases := []servicetest.RESTRefusal[string]{
		{"no credential", "POST", "/v1/tokens", "", `{"identity": "` + alice + `"}`, 401, "missing credential"},
		{"access token as app key", "POST", "/v1/tokens", tok, `{"identity": "` + alice + `"}`, 401, "malformed app API key"},
		{"raw id as identity", "POST", "/v1/tokens", key, `{"identity": "alice"}`, 400, "identity"},
		{"ttl out of range", "POST", "/v1/tokens", key, `{"identity": "` + alice + `", "ttl": "90000s"}`, 400, "out of range"},
		{"ttl not a duration", "POST", "/v1/tokens", key, `{"identity": "` + alice + `", "ttl": "soon"}`, 400, ""},
		{"unknown field", "POST", "/v1/tokens", key, `{"identity": "` + alice + `", "role": "admin"}`, 400, "role"},
		{"malformed JSON", "POST", "/v1/identities:resolve", key, `{"uids": [`, 400, ""},
		{"no ids", "POST", "/v1/identities:resolve", key, `{}`, 400, "no ids given"},
		{"id too long", "POST", "/v1/identities:resolve", key, `{"uids": ["` + strings.Repeat("x", 257) + `"]}`, 400, "257 bytes"},
		{"body over the limit", "POST", "/v1/identities:resolve", key, `{"uids": ["` + strings.Repeat("x", 1<<20) + `"]}`, 413, "over the limit"},
		{"admin call without admin", "POST", "/v1/apps", key, `{"displayName": "x"}`, 401, "invalid admin credential"},
		{"unknown app", "GET", "/v1/apps/" + appIDPrefix + strings.Repeat("a", appIDLen), testAdmin, "", 404, "not found"},
		{"future revocation", "POST", "/v1/tokens:revoke", key, `{"identity": "` + alice + `", "before": "2999-01-01T00:00:00Z"}`, 400, "in the future"},
		{"unknown route", "GET", "/v1/nothing-here", tok, "", 404, "no route"},
		{"wrong method", "DELETE", "/v1/tokens", key, "", 405, "not allowed"},
		{"internal RPC has no route", "GET", "/v1/revocations", tok, "", 404, "no route"},
	}
	servicetest.CheckRESTRefusals(t, cases, e.rest, e.snapshot)
}
