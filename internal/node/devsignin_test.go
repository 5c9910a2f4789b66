package node

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/umbra-e2ee/umbra/internal/runtest"
)

// startDev runs RunDev on dir with web as its web chat until the test ends (or stop is
// called), and returns its addresses once it is ready.
func startDev(t *testing.T, dir string, web fs.FS) (Addrs, func()) {
	t.Helper()
	r := runtest.MustStart(t, "RunDev", runningDev(t, dir, web))
	return r.Ready, func() { r.StopChecked(t) }
}

// runningDev is RunDev on dir with web as its web chat, telling runtest when it is
// ready (after its banner).
func runningDev(t testing.TB, dir string, web fs.FS) func(context.Context, func(context.Context, Addrs) error) error {
	return func(ctx context.Context, ready func(context.Context, Addrs) error) error {
		cfg := DevConfig{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: dir, Out: io.Discard, Web: web,
			Tune: func(c *Config) {
				banner := c.Ready
				c.Ready = func(ctx context.Context, a Addrs) error {
					if err := banner(ctx, a); err != nil {
						return err
					}
					return ready(ctx, a)
				}
			},
		}
		return RunDev(ctx, cfg, zaptest.NewLogger(t))
	}
}

// devCall sends one request to the dev routes with the given headers (a JSON
// Content-Type unless headers say otherwise) and returns the status and JSON body.
func devCall(t *testing.T, method, url, body string, headers ...string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: not a JSON object (%v): %s", method, url, err, b)
	}
	return resp.StatusCode, out
}

// TestDevSignIn: `umbra dev` signs a typed name in as the development app's identity
// for it (the CLI's `umbra login NAME` identity) with a working access token, lists the
// names that signed in (across a restart), resolves any name, and serves its web chat
// beside them.
func TestDevSignIn(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	web := fstest.MapFS{"index.html": {Data: []byte("<!doctype html><title>Umbra chat</title>")}}
	addrs, stop := startDev(t, dir, web)
	base := "http://" + addrs.Gateway

	if code, _ := devCall(t, "GET", base+"/dev/users", ""); code != http.StatusOK {
		t.Fatalf("GET /dev/users: %d", code)
	}
	code, alice := devCall(t, "POST", base+"/dev/sign-in", `{"name":"  alice "}`)
	if code != http.StatusOK || alice["name"] != "alice" || !strings.HasPrefix(alice["identity"].(string), "u_") {
		t.Fatalf("sign in as alice: %d %v", code, alice)
	}
	if exp, err := time.Parse(time.RFC3339, alice["expiresAt"].(string)); err != nil || time.Until(exp) < 50*time.Minute {
		t.Errorf("expiresAt %v (%v); want about an hour from now", alice["expiresAt"], err)
	}
	// The token acts for alice's identity.
	code, who := call(t, "GET", base+"/v1/whoami", alice["accessToken"].(string), nil)
	if code != http.StatusOK || who["identity"] != alice["identity"] {
		t.Fatalf("whoami with alice's token: %d %v; want %v", code, who, alice["identity"])
	}
	// The same name is the same identity, the one the app key resolves it to (the CLI's).
	_, again := devCall(t, "POST", base+"/dev/sign-in", `{"name":"alice"}`)
	creds, err := loadDevCredentials(filepath.Join(dir, devCredentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	_, resolved := call(t, "POST", base+"/v1/identities:resolve", creds.APIKey, map[string]any{"uids": []string{"alice"}})
	if again["identity"] != alice["identity"] || resolved["users"].(map[string]any)["alice"] != alice["identity"] {
		t.Errorf("alice is %v, then %v, and %v by the app key; want one identity", alice["identity"], again["identity"], resolved["users"])
	}
	code, bob := devCall(t, "POST", base+"/dev/sign-in", `{"name":"Bob Smith"}`)
	if code != http.StatusOK || bob["identity"] == alice["identity"] {
		t.Fatalf("sign in as Bob Smith: %d %v", code, bob)
	}

	wantUsers := func(t *testing.T, users map[string]any, names ...string) {
		t.Helper()
		list, _ := users["users"].([]any)
		if len(list) != len(names) {
			t.Fatalf("users %v; want %v", users, names)
		}
		for i, u := range list {
			u := u.(map[string]any)
			if u["name"] != names[i] || !strings.HasPrefix(u["identity"].(string), "u_") {
				t.Errorf("user %d is %v; want %s with an identity", i, u, names[i])
			}
		}
	}
	_, users := devCall(t, "GET", base+"/dev/users", "")
	wantUsers(t, users, "Bob Smith", "alice")
	_, carol := devCall(t, "POST", base+"/dev/resolve", `{"names":["carol","alice"]}`)
	wantUsers(t, carol, "carol", "alice")
	if carol["users"].([]any)[1].(map[string]any)["identity"] != alice["identity"] {
		t.Errorf("resolve alice: %v; want %v", carol, alice["identity"])
	}
	// Resolving signs nobody in.
	_, users = devCall(t, "GET", base+"/dev/users", "")
	wantUsers(t, users, "Bob Smith", "alice")

	// The web chat beside them.
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(page, web["index.html"].Data) {
		t.Errorf("GET /: %d %q; want the web chat's index.html", resp.StatusCode, page)
	}

	// The names survive a restart.
	stop()
	addrs, _ = startDev(t, dir, web)
	_, users = devCall(t, "GET", "http://"+addrs.Gateway+"/dev/users", "")
	wantUsers(t, users, "Bob Smith", "alice")
}

// TestDevGroupNames: POST /dev/groups gives a group name's identity, the one the app
// key resolves the app's group id to (the CLI's `umbra group create NAME`), and
// remembers the name; GET /dev/groups lists the names given, across a restart, so
// every member's chat shows the group's name.
func TestDevGroupNames(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addrs, stop := startDev(t, dir, nil)
	base := "http://" + addrs.Gateway

	code, none := devCall(t, "GET", base+"/dev/groups", "")
	if list, ok := none["groups"].([]any); code != http.StatusOK || !ok || len(list) != 0 {
		t.Fatalf("GET /dev/groups before any: %d %v; want an empty list", code, none)
	}
	code, team := devCall(t, "POST", base+"/dev/groups", `{"name":" team "}`)
	if code != http.StatusOK || team["name"] != "team" || !strings.HasPrefix(team["identity"].(string), "g_") {
		t.Fatalf("POST /dev/groups team: %d %v", code, team)
	}
	creds, err := loadDevCredentials(filepath.Join(dir, devCredentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	_, resolved := call(t, "POST", base+"/v1/identities:resolve", creds.APIKey, map[string]any{"guids": []string{"team"}})
	if resolved["groups"].(map[string]any)["team"] != team["identity"] {
		t.Errorf("team is %v here and %v by the app key; want one identity", team["identity"], resolved["groups"])
	}
	devCall(t, "POST", base+"/dev/groups", `{"name":"Book club"}`)
	devCall(t, "POST", base+"/dev/groups", `{"name":"team"}`)

	wantGroups := func(t *testing.T, base string) {
		t.Helper()
		_, groups := devCall(t, "GET", base+"/dev/groups", "")
		list, _ := groups["groups"].([]any)
		if len(list) != 2 {
			t.Fatalf("groups %v; want Book club and team", groups)
		}
		for i, name := range []string{"Book club", "team"} {
			g := list[i].(map[string]any)
			if g["name"] != name || !strings.HasPrefix(g["identity"].(string), "g_") {
				t.Errorf("group %d is %v; want %s with a group identity", i, g, name)
			}
		}
		if list[1].(map[string]any)["identity"] != team["identity"] {
			t.Errorf("team listed as %v; want %v", list[1], team["identity"])
		}
	}
	wantGroups(t, base)
	// A group name is no user: the contact list is unchanged.
	if _, users := devCall(t, "GET", base+"/dev/users", ""); len(users["users"].([]any)) != 0 {
		t.Errorf("users %v after naming groups; want none", users)
	}

	stop()
	addrs, _ = startDev(t, dir, nil)
	wantGroups(t, "http://"+addrs.Gateway)
}

// TestDevSignInBadRequests: every bad request to the dev routes gets its code and a
// message saying what was wrong, and adds no name to the list; requests that do not
// come from a page or program of this machine are refused with 403.
func TestDevSignInBadRequests(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addrs, _ := startDev(t, dir, nil)
	base := "http://" + addrs.Gateway
	port := addrs.Gateway[strings.LastIndex(addrs.Gateway, ":"):]
	cases := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		msg                      string
	}{
		{"empty name", "POST", "/dev/sign-in", `{"name":"  "}`, nil, 400, "type a name"},
		{"no name", "POST", "/dev/sign-in", `{}`, nil, 400, "type a name"},
		{"long name", "POST", "/dev/sign-in", `{"name":"` + strings.Repeat("x", 65) + `"}`, nil, 400, "at most 64 bytes"},
		{"control character", "POST", "/dev/sign-in", `{"name":"al\u0007ice"}`, nil, 400, "control or invisible"},
		{"unknown field", "POST", "/dev/sign-in", `{"name":"alice","admin":true}`, nil, 400, `unknown field "admin"`},
		{"two objects", "POST", "/dev/sign-in", `{"name":"alice"}{"name":"bob"}`, nil, 400, "one JSON object"},
		{"not JSON", "POST", "/dev/sign-in", `name=alice`, nil, 400, "invalid character"},
		{"a form post", "POST", "/dev/sign-in", `{"name":"alice"}`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 400, "application/json"},
		{"a plain-text post", "POST", "/dev/sign-in", `{"name":"alice"}`, []string{"Content-Type", "text/plain"}, 400, "application/json"},
		{"GET sign-in", "GET", "/dev/sign-in", "", nil, 405, "method GET is not allowed"},
		{"POST users", "POST", "/dev/users", `{}`, nil, 405, "method POST is not allowed"},
		{"unknown route", "POST", "/dev/make-admin", `{}`, nil, 404, "no route for POST /dev/make-admin"},
		{"resolve nothing", "POST", "/dev/resolve", `{"names":[]}`, nil, 400, "give 1 to 1000 names"},
		{"resolve a bad name", "POST", "/dev/resolve", `{"names":["ok",""]}`, nil, 400, "type a name"},
		{"empty group name", "POST", "/dev/groups", `{"name":" "}`, nil, 400, "group name: type a name"},
		{"long group name", "POST", "/dev/groups", `{"name":"` + strings.Repeat("x", 65) + `"}`, nil, 400, "group name: at most 64 bytes"},
		{"group name and more", "POST", "/dev/groups", `{"name":"team","members":["bob"]}`, nil, 400, `unknown field "members"`},
		{"a group named by a form", "POST", "/dev/groups", `{"name":"team"}`, []string{"Content-Type", "text/plain"}, 400, "application/json"},
		{"DELETE groups", "DELETE", "/dev/groups", "", nil, 405, "method DELETE is not allowed"},
		{"the groups of another site's page", "GET", "/dev/groups", "", []string{"Origin", "https://evil.example"}, 403, "pages served from this machine only"},
		{"a page of another site (DNS rebinding)", "POST", "/dev/sign-in", `{"name":"alice"}`, []string{"Host", "evil.example" + port}, 403, `not "evil.example` + port + `"`},
		{"another site's page", "POST", "/dev/sign-in", `{"name":"alice"}`, []string{"Origin", "https://evil.example"}, 403, "pages served from this machine only"},
		{"an opaque origin", "POST", "/dev/sign-in", `{"name":"alice"}`, []string{"Origin", "null"}, 403, "pages served from this machine only"},
		{"the users of another site's page", "GET", "/dev/users", "", []string{"Origin", "http://127.0.0.1.evil.example"}, 403, "pages served from this machine only"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := devCall(t, tc.method, base+tc.path, tc.body, tc.headers...)
			if msg, _ := body["message"].(string); code != tc.status || !strings.Contains(msg, tc.msg) {
				t.Errorf("%d %v; want %d and a message containing %q", code, body, tc.status, tc.msg)
			}
			for _, f := range []string{devUsersFile, devGroupsFile} {
				if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
					t.Errorf("a bad request added a name: %s exists", f)
				}
			}
		})
	}
	// A page of this machine on another port (a front end's own dev server) may.
	if code, body := devCall(t, "POST", base+"/dev/sign-in", `{"name":"alice"}`, "Origin", "http://localhost:5173"); code != http.StatusOK {
		t.Errorf("sign-in from http://localhost:5173: %d %v", code, body)
	}
}

// TestDevSignInRefusesNonLoopbackCallers: the dev routes answer a TCP peer on another
// machine with 403 before anything else (umbra dev listens on loopback only, so this is
// the second wall). A handler not yet ready shows which requests passed the check: they
// get its 503.
func TestDevSignInRefusesNonLoopbackCallers(t *testing.T) {
	t.Parallel()
	h := newDevSignIn(t.TempDir(), zaptest.NewLogger(t))
	cases := []struct {
		remote string
		status int
	}{
		{"127.0.0.1:40000", http.StatusServiceUnavailable},
		{"127.8.9.10:40000", http.StatusServiceUnavailable},
		{"[::1]:40000", http.StatusServiceUnavailable},
		{"203.0.113.9:40000", http.StatusForbidden},
		{"10.1.2.3:40000", http.StatusForbidden},
		{"[2001:db8::1]:40000", http.StatusForbidden},
		{"[::ffff:203.0.113.9]:40000", http.StatusForbidden},
		{"no port", http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.remote, func(t *testing.T) {
			req := httptest.NewRequest("POST", "http://127.0.0.1:8080/dev/sign-in", strings.NewReader(`{"name":"alice"}`))
			req.Header.Set("Content-Type", "application/json")
			req.RemoteAddr = tc.remote
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("caller %s: %d %s; want %d", tc.remote, rec.Code, rec.Body, tc.status)
			}
			if tc.status == http.StatusForbidden && !strings.Contains(rec.Body.String(), "loopback") {
				t.Errorf("refusal %s does not say why", rec.Body)
			}
		})
	}
}
