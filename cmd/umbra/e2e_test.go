package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// e2eVersion is stamped into the test binary, to prove -ldflags reaches `umbra version`.
const e2eVersion = "v0.0.0-e2e"

// TestBinary builds the real umbra binary once and drives it as a user would: its
// command line, then `umbra dev` over REST, across a restart.
func TestBinary(t *testing.T) {
	bin := e2eBinary(t)

	t.Run("command line", func(t *testing.T) {
		cases := []struct {
			name     string
			args     []string
			exit     int
			stdout   string // exact, when set
			stderr   string // substring
			noStdout bool
		}{
			{"version", []string{"version"}, 0, "umbra " + e2eVersion + "\n", "", false},
			{"no command", nil, 2, "", "Usage: umbra <command>", true},
			{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`, true},
			{"unknown flag", []string{"dev", "--no-such-flag"}, 2, "", "flag provided but not defined", true},
			{"dev beyond loopback", []string{"dev", "--data", t.TempDir(), "--grpc-addr", "0.0.0.0:0", "--http-addr", "127.0.0.1:0"}, 1, "", "not a loopback address", true},
			{"dev metrics beyond loopback", []string{"dev", "--data", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--metrics-addr", "0.0.0.0:0"}, 1, "", "not a loopback address", true},
			{"serve without a role", []string{"serve"}, 2, "", "usage: umbra serve <", true},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, bin, tc.args...)
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				var exitErr *exec.ExitError
				if err != nil && !errors.As(err, &exitErr) {
					t.Fatalf("run %v: %v", tc.args, err)
				}
				if got := cmd.ProcessState.ExitCode(); got != tc.exit {
					t.Fatalf("umbra %v exited %d; want %d\nstdout: %s\nstderr: %s", tc.args, got, tc.exit, &stdout, &stderr)
				}
				if tc.stdout != "" && stdout.String() != tc.stdout {
					t.Errorf("stdout %q; want %q", &stdout, tc.stdout)
				}
				if tc.noStdout && stdout.Len() != 0 {
					t.Errorf("stdout %q; want nothing (errors go to stderr)", &stdout)
				}
				if !strings.Contains(stderr.String(), tc.stderr) {
					t.Errorf("stderr %q; want it to contain %q", &stderr, tc.stderr)
				}
			})
		}
	})

	t.Run("dev", func(t *testing.T) { e2eTestDev(t, bin) })
}

// e2eFreePort returns a loopback port that was free a moment ago.
func e2eFreePort(t *testing.T) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port
}

// e2eFreePorts returns two different loopback ports, for a server's gRPC and HTTP
// listeners, that were free a moment ago.
func e2eFreePorts(t *testing.T) (grpcPort, httpPort int) {
	t.Helper()
	grpcPort, httpPort = e2eFreePort(t), e2eFreePort(t)
	for grpcPort == httpPort {
		httpPort = e2eFreePort(t)
	}
	return grpcPort, httpPort
}

// e2eDev is one running `umbra dev`.
type e2eDev struct {
	cmd        *exec.Cmd
	stderrPath string
	exited     chan struct{} // closed once the process has been waited for
	waitErr    error
	appID      string
	apiKey     string
	adminToken string
	base       string
	// stdout is everything the process printed on standard output.
	stdout syncBuffer
	// metrics is the URL of /metrics, on a listener of its own.
	metrics string
}

// e2eStartDev runs `umbra dev` (with extra flags, if any) and waits (30 s at most) for
// the banner with its credentials. The process is killed on cleanup if it is still
// running, and its log is shown if the test failed.
func e2eStartDev(t *testing.T, bin, dataDir string, grpcPort, httpPort int, extra ...string) *e2eDev {
	t.Helper()
	p := &e2eDev{
		stderrPath: filepath.Join(t.TempDir(), "stderr.log"),
		exited:     make(chan struct{}),
		base:       fmt.Sprintf("http://127.0.0.1:%d", httpPort),
	}
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", e2eFreePort(t))
	p.metrics = "http://" + metricsAddr + "/metrics"
	stderr, err := os.Create(p.stderrPath)
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	p.cmd = exec.Command(bin, append([]string{"dev",
		"--data", dataDir,
		"--grpc-addr", fmt.Sprintf("127.0.0.1:%d", grpcPort),
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--metrics-addr", metricsAddr}, extra...)...)
	p.cmd.Env = e2eEnv(os.Environ())
	p.cmd.Stderr = stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			log, _ := os.ReadFile(p.stderrPath)
			t.Logf("umbra dev log:\n%s", log)
		}
	})

	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			fmt.Fprintln(&p.stdout, sc.Text())
			lines <- sc.Text()
		}
		close(lines)
		// The pipe is drained, so Wait may close it.
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	// Keep draining stdout after the banner so the process never blocks on it.
	defer func() {
		go func() {
			for range lines {
			}
		}()
	}()
	timeout := time.After(30 * time.Second)
	for p.apiKey == "" || p.adminToken == "" || p.appID == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				<-p.exited
				t.Fatalf("umbra dev exited before printing its credentials: %v", p.waitErr)
			}
			line = strings.TrimSpace(line)
			if v, ok := strings.CutPrefix(line, "export UMBRA_API_KEY="); ok {
				p.apiKey = v
			}
			if v, ok := strings.CutPrefix(line, "export UMBRA_ADMIN_TOKEN="); ok {
				p.adminToken = v
			}
			if v, ok := strings.CutPrefix(line, "Development app "); ok {
				p.appID, _, _ = strings.Cut(v, ".")
			}
		case <-timeout:
			t.Fatal("umbra dev printed no credentials within 30 s")
		}
	}
	return p
}

// e2eAllowPlaintext lets the development app send PLAINTEXT direct messages, which are
// refused by default, through the gateway with the admin credential: for tests whose
// messages are opaque test bytes, not ciphertext of a published card.
func e2eAllowPlaintext(t *testing.T, p *e2eDev) {
	t.Helper()
	r := e2eSendJSON(t, "POST", p.base+"/v1/apps/"+p.appID+"/messaging-settings", p.adminToken, `{"settings": {"allowPlaintextDirect": true}}`)
	e2eWantStatus(t, "allow PLAINTEXT direct messages", r, http.StatusOK)
}

// e2eEnv drops UMBRA_* variables, which would set flags.
func e2eEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "UMBRA_") {
			out = append(out, kv)
		}
	}
	return out
}

// e2eDevAndWork builds the binary and starts `umbra dev` with a data folder of its own
// on free ports (the caller stops it), and returns the binary, the dev, its gRPC port
// and a work folder.
func e2eDevAndWork(t *testing.T) (bin string, p *e2eDev, grpcPort int, work string) {
	t.Helper()
	bin = e2eBinary(t)
	grpcPort, httpPort := e2eFreePorts(t)
	p = e2eStartDev(t, bin, filepath.Join(t.TempDir(), "umbra-data"), grpcPort, httpPort)
	return bin, p, grpcPort, t.TempDir()
}

// e2eLinkBinary links the binary into work as ./umbra, for the README's scripts.
func e2eLinkBinary(t *testing.T, bin, work string) {
	t.Helper()
	if err := os.Symlink(bin, filepath.Join(work, "umbra")); err != nil {
		t.Fatal(err)
	}
}

// e2eServe starts cmd, writing its output to a new file at logPath, and stops it when
// the test ends: SIGTERM, then an error unless it exits 0 within 15 s. name names it in
// the errors and in the log, shown when the test failed.
func e2eServe(t *testing.T, name string, cmd *exec.Cmd, logPath string) {
	t.Helper()
	logOut, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logOut, logOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s exited with %v after SIGTERM", name, err)
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			t.Errorf("%s did not stop within 15 s of SIGTERM", name)
		}
		logOut.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s log:\n%s", name, b)
		}
	})
}

// stop sends SIGTERM and fails unless the process exits 0 within 15 s.
func (p *e2eDev) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("umbra dev did not exit within 15 s of SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("umbra dev exited %d after SIGTERM (%v); want 0", code, p.waitErr)
	}
}

// e2eReply is an HTTP response read whole.
type e2eReply struct {
	status int
	body   []byte
}

func (r e2eReply) object(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object (%v): %s", err, r.body)
	}
	return m
}

func (r e2eReply) str(t *testing.T, field string) string {
	t.Helper()
	s, ok := r.object(t)[field].(string)
	if !ok {
		t.Fatalf("body has no string %q: %s", field, r.body)
	}
	return s
}

var e2eClient = &http.Client{Timeout: 10 * time.Second}

// e2eSend performs one request; a non-empty bearer goes in the Authorization header.
func e2eSend(t *testing.T, method, url, bearer string, body io.Reader) e2eReply {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := e2eClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return e2eReply{status: resp.StatusCode, body: b}
}

func e2eSendJSON(t *testing.T, method, url, bearer, body string) e2eReply {
	t.Helper()
	return e2eSend(t, method, url, bearer, strings.NewReader(body))
}

// e2eWantStatus fails unless r has status.
func e2eWantStatus(t *testing.T, what string, r e2eReply, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: %d %s; want %d", what, r.status, r.body, status)
	}
}

var e2eIdentityPattern = regexp.MustCompile(`^u_[a-z2-7]{32}$`)

// e2eResolve resolves uids in one call and checks the shape of each identity.
func e2eResolve(t *testing.T, p *e2eDev, uids ...string) map[string]string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"uids": uids})
	r := e2eSendJSON(t, "POST", p.base+"/v1/identities:resolve", p.apiKey, string(body))
	e2eWantStatus(t, "resolve", r, http.StatusOK)
	users, _ := r.object(t)["users"].(map[string]any)
	out := map[string]string{}
	for _, uid := range uids {
		id, _ := users[uid].(string)
		if !e2eIdentityPattern.MatchString(id) {
			t.Fatalf("identity of %q is %q; want it to match %s", uid, id, e2eIdentityPattern)
		}
		if strings.Contains(strings.ToLower(id), strings.ToLower(uid)) {
			t.Fatalf("identity %q contains the raw uid %q", id, uid)
		}
		out[uid] = id
	}
	return out
}

func e2eIssue(t *testing.T, p *e2eDev, identity string) string {
	t.Helper()
	r := e2eSendJSON(t, "POST", p.base+"/v1/tokens", p.apiKey, fmt.Sprintf(`{"identity":%q}`, identity))
	e2eWantStatus(t, "issue token", r, http.StatusOK)
	return r.str(t, "accessToken")
}

// e2eWhoAmI returns the status of GET /v1/whoami with token and the identity it names.
func e2eWhoAmI(t *testing.T, p *e2eDev, token string) (int, string) {
	t.Helper()
	r := e2eSend(t, "GET", p.base+"/v1/whoami", token, nil)
	if r.status != http.StatusOK {
		return r.status, ""
	}
	return r.status, r.str(t, "identity")
}

func e2eTokenKid(t *testing.T, token string) string {
	t.Helper()
	header, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		t.Fatalf("token header: %v", err)
	}
	var h struct{ Kid string }
	if err := json.Unmarshal(b, &h); err != nil || h.Kid == "" {
		t.Fatalf("token header %s has no kid (%v)", b, err)
	}
	return h.Kid
}

func e2eJWKSKids(t *testing.T, p *e2eDev) []string {
	t.Helper()
	r := e2eSend(t, "GET", p.base+"/.well-known/jwks.json", "", nil)
	e2eWantStatus(t, "jwks", r, http.StatusOK)
	var set struct {
		Keys []struct{ Kid, Kty, Crv string }
	}
	if err := json.Unmarshal(r.body, &set); err != nil {
		t.Fatalf("jwks: %v: %s", err, r.body)
	}
	var kids []string
	for _, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" {
			t.Errorf("jwk %+v; want an OKP Ed25519 key", k)
		}
		kids = append(kids, k.Kid)
	}
	return kids
}

// e2eTestDev drives one `umbra dev` over REST, stops it with SIGTERM and restarts it on
// the same data.
func e2eTestDev(t *testing.T, bin string) {
	dataDir := filepath.Join(t.TempDir(), "umbra-data")
	grpcPort, httpPort := e2eFreePorts(t)
	p := e2eStartDev(t, bin, dataDir, grpcPort, httpPort)

	// Health.
	e2eWantStatus(t, "/healthz", e2eSend(t, "GET", p.base+"/healthz", "", nil), http.StatusOK)
	ready := e2eSend(t, "GET", p.base+"/readyz", "", nil)
	e2eWantStatus(t, "/readyz", ready, http.StatusOK)
	if ready.object(t)["ready"] != true {
		t.Fatalf("/readyz body %s; want ready true", ready.body)
	}

	// Metrics: on their own listener, never on the REST API's.
	e2eWantStatus(t, "/metrics on the REST listener", e2eSend(t, "GET", p.base+"/metrics", "", nil), http.StatusNotFound)
	metrics := e2eSend(t, "GET", p.metrics, "", nil)
	e2eWantStatus(t, "/metrics on --metrics-addr", metrics, http.StatusOK)
	if !bytes.Contains(metrics.body, []byte("umbra_grpc_calls_total")) || !bytes.Contains(metrics.body, []byte("go_goroutines")) {
		t.Errorf("/metrics on --metrics-addr lacks the gRPC and Go metrics:\n%.300s", metrics.body)
	}

	// Identities are stable, distinct and opaque.
	const aliceUID, bobUID = "alice@example.com", "bob"
	both := e2eResolve(t, p, aliceUID, bobUID)
	alice, bob := both[aliceUID], both[bobUID]
	if alice == bob {
		t.Fatalf("alice and bob resolve to the same identity %s", alice)
	}
	if again := e2eResolve(t, p, aliceUID)[aliceUID]; again != alice {
		t.Fatalf("alice resolves to %s, then to %s; want a stable identity", alice, again)
	}

	// Tokens.
	aliceToken := e2eIssue(t, p, alice)
	bobToken := e2eIssue(t, p, bob)
	if code, id := e2eWhoAmI(t, p, aliceToken); code != http.StatusOK || id != alice {
		t.Fatalf("whoami with alice's token: %d %q; want 200 %s", code, id, alice)
	}
	kid := e2eTokenKid(t, aliceToken)
	kids := e2eJWKSKids(t, p)
	if !slices.Contains(kids, kid) {
		t.Fatalf("the JWK set %v lacks the token's kid %s", kids, kid)
	}

	// Refusals.
	badKey := "uak_" + strings.Repeat("a", 16) + "_" + strings.Repeat("A", 43)
	refusals := []struct {
		name   string
		method string
		path   string
		bearer string
		body   io.Reader
		status int
	}{
		{"unknown API key", "POST", "/v1/tokens", badKey, strings.NewReader(fmt.Sprintf(`{"identity":%q}`, alice)), http.StatusUnauthorized},
		{"admin token as API key", "POST", "/v1/identities:resolve", p.adminToken, strings.NewReader(`{"uids":["x"]}`), http.StatusUnauthorized},
		{"no credential", "GET", "/v1/whoami", "", nil, http.StatusUnauthorized},
		{"body over 1 MiB", "POST", "/v1/identities:resolve", p.apiKey, bytes.NewReader(bytes.Repeat([]byte(" "), 1<<20+1)), http.StatusRequestEntityTooLarge},
		{"unknown route", "GET", "/v1/no-such-thing", p.apiKey, nil, http.StatusNotFound},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			r := e2eSend(t, tc.method, p.base+tc.path, tc.bearer, tc.body)
			e2eWantStatus(t, tc.name, r, tc.status)
			if _, ok := r.object(t)["code"]; !ok {
				t.Errorf("error body %s has no code", r.body)
			}
		})
	}

	// Revocation logs alice out: her token stops working at once (umbra dev hosts the
	// identity service, whose store every service checks), bob's is untouched, and a
	// token issued after the revocation works.
	revoke := e2eSendJSON(t, "POST", p.base+"/v1/tokens:revoke", p.apiKey, fmt.Sprintf(`{"identity":%q}`, alice))
	e2eWantStatus(t, "revoke", revoke, http.StatusOK)
	revokedAt := time.Now()
	if code, _ := e2eWhoAmI(t, p, aliceToken); code != http.StatusUnauthorized {
		t.Fatalf("whoami with a revoked token, right after the revocation: %d; want 401", code)
	}
	if code, id := e2eWhoAmI(t, p, bobToken); code != http.StatusOK || id != bob {
		t.Fatalf("whoami with bob's token after alice's revocation: %d %q; want 200 %s", code, id, bob)
	}
	time.Sleep(time.Until(revokedAt.Add(1100 * time.Millisecond)))
	freshToken := e2eIssue(t, p, alice)
	if code, id := e2eWhoAmI(t, p, freshToken); code != http.StatusOK || id != alice {
		t.Fatalf("whoami with a token issued after the revocation: %d %q; want 200 %s", code, id, alice)
	}

	// The development credentials are kept for the next start, readable by the owner only.
	fi, err := os.Stat(filepath.Join(dataDir, "dev-credentials.json"))
	if err != nil {
		t.Fatalf("dev credentials: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("dev-credentials.json has mode %v; want 0600", perm)
	}

	// A clean stop, then a restart on the same data and the same ports.
	p.stop(t)
	p2 := e2eStartDev(t, bin, dataDir, grpcPort, httpPort)
	if p2.apiKey != p.apiKey || p2.adminToken != p.adminToken {
		t.Fatalf("after a restart the banner shows other credentials:\n  api key %s -> %s\n  admin %s -> %s", p.apiKey, p2.apiKey, p.adminToken, p2.adminToken)
	}
	e2eWantStatus(t, "/readyz after restart", e2eSend(t, "GET", p2.base+"/readyz", "", nil), http.StatusOK)
	if again := e2eResolve(t, p2, aliceUID)[aliceUID]; again != alice {
		t.Fatalf("after a restart alice resolves to %s; want %s", again, alice)
	}
	// Signing keys and revocations are durable too.
	if !slices.Contains(e2eJWKSKids(t, p2), kid) {
		t.Errorf("after a restart the JWK set lacks the signing key %s", kid)
	}
	if code, id := e2eWhoAmI(t, p2, freshToken); code != http.StatusOK || id != alice {
		t.Errorf("after a restart a token issued before it: %d %q; want 200 %s", code, id, alice)
	}
	if code, _ := e2eWhoAmI(t, p2, aliceToken); code != http.StatusUnauthorized {
		t.Errorf("after a restart the revoked token gets %d; want 401", code)
	}
	p2.stop(t)
}
