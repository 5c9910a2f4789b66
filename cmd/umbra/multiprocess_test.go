package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf/tlstest"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// TestEveryRoleAsItsOwnProcess runs each service as its own `umbra serve` process on
// loopback, with its own data folder and mTLS between all of them, and the gateway in
// front; then drives the README's CLI walk-through through the gateway. It proves the
// services really work as separate processes, and that internal methods accept only
// services' certificates.
func TestEveryRoleAsItsOwnProcess(t *testing.T) {
	bin := e2eBinary(t)
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "umbra")
	const admin = "multiprocess-admin-credential-0123456789"
	roles := []string{"identity", "card", "backup", "group", "messaging"}
	ports := map[string]int{}
	for _, r := range append(roles, "gateway", "gateway-http", "gateway-metrics") {
		ports[r] = e2eFreePort(t)
	}
	addr := func(role string) string { return fmt.Sprintf("127.0.0.1:%d", ports[role]) }
	peers := func() []string {
		var out []string
		for _, r := range roles {
			out = append(out, "--"+r+"-addr", addr(r))
		}
		return out
	}

	t.Run("serve refuses to start without TLS", func(t *testing.T) {
		out, err := exec.Command(bin, "serve", "identity", "--grpc-addr", "127.0.0.1:0", "--data", t.TempDir()).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "needs TLS") {
			t.Fatalf("umbra serve without TLS: %v\n%s", err, out)
		}
	})

	start := func(role string, args ...string) {
		cert, key := ca.Issue(t, dir, role)
		cmd := exec.Command(bin, append([]string{"serve", role,
			"--grpc-addr", addr(role),
			"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca.File,
			"--peer-tls-ca", ca.File, "--peer-tls-cert", cert, "--peer-tls-key", key,
			"--log-level", "warn",
		}, args...)...)
		cmd.Env = append(e2eEnv(os.Environ()), "UMBRA_BACKUP_SECRET=multiprocess-backup-secret-0123456789abcdef")
		e2eServe(t, role, cmd, filepath.Join(dir, role+".log"))
	}
	// Started in reverse, identity last: services come up in any order, and a call to
	// a peer that is not listening yet waits for it instead of failing.
	for i := len(roles) - 1; i >= 0; i-- {
		r := roles[i]
		start(r, append([]string{
			"--data", filepath.Join(dir, "data-"+r),
			"--service-peers", strings.Join(roles, ","),
			"--admin-token", admin,
		}, peers()...)...)
	}
	start("gateway", append([]string{"--http-addr", addr("gateway-http"), "--metrics-addr", addr("gateway-metrics")}, peers()...)...)

	// The gateway is ready once every service answers it over mTLS.
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(ca.File)
	pool.AppendCertsFromPEM(caPEM)
	https := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := https.Get("https://" + addr("gateway-http") + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway was not ready within 30 s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The standalone gateway serves its process metrics on --metrics-addr, and not on
	// its public listener.
	resp, err := https.Get("https://" + addr("gateway-http") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("gateway /metrics on the public listener: %d; want 404", resp.StatusCode)
	}
	resp, err = http.Get("http://" + addr("gateway-metrics") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("go_goroutines")) {
		t.Errorf("gateway /metrics on --metrics-addr: %d\n%.300s", resp.StatusCode, body)
	}

	// An app, created through the gateway's gRPC side with the admin credential.
	gw, err := grpcclient.Dial(grpcclient.Config{Addr: addr("gateway"), TLS: tlsconf.Client{CAFile: ca.File}})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	app, err := identityv1.NewIdentityServiceClient(gw).CreateApp(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+admin), &identityv1.CreateAppRequest{DisplayName: "multiprocess"})
	if err != nil {
		t.Fatal(err)
	}

	// The app allows PLAINTEXT direct messages (refused by default), which the messages
	// below are: the operator's setting, through the proxy into the messaging process.
	if _, err := messagingv1.NewMessagingServiceClient(gw).UpdateAppSettings(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+admin),
		&messagingv1.UpdateAppSettingsRequest{AppId: app.GetApp().GetAppId(), Settings: &messagingv1.AppSettings{AllowPlaintextDirect: true}}); err != nil {
		t.Fatal(err)
	}

	// SendStream through the gateway's gRPC proxy: requests sent ahead, replies in order.
	ids := identityv1.NewIdentityServiceClient(gw)
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+app.GetApiKey())
	users, err := ids.ResolveIdentities(actx, &identityv1.ResolveIdentitiesRequest{Uids: []string{"streamer", "reader"}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ids.IssueToken(actx, &identityv1.IssueTokenRequest{Identity: users.GetUsers()["streamer"]})
	if err != nil {
		t.Fatal(err)
	}
	ss, err := messagingv1.NewMessagingServiceClient(gw).SendStream(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok.GetAccessToken()))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		err := ss.Send(&messagingv1.SendStreamRequest{Send: &messagingv1.SendRequest{
			ConversationId: users.GetUsers()["reader"], ClientMessageId: fmt.Sprint("s-", i),
			Header: &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT}, Envelope: []byte("through the proxy"),
		}})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := ss.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if r, err := ss.Recv(); err != nil || r.GetSent().GetSequence() != uint64(i+1) {
			t.Fatalf("SendStream reply %d through the gateway: %v, %v", i, r, err)
		}
	}

	// Internal methods: refused through the gateway, refused to a certificate that is
	// not a service's, accepted from a service's.
	_, err = identityv1.NewIdentityServiceClient(gw).ListRevocations(ctx, &identityv1.ListRevocationsRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("internal method through the gateway: %v; want PermissionDenied", err)
	}
	for name, want := range map[string]codes.Code{"gateway": codes.PermissionDenied, "messaging": codes.OK} {
		cert, key := ca.Issue(t, t.TempDir(), name)
		conn, err := grpcclient.Dial(grpcclient.Config{Addr: addr("card"), TLS: tlsconf.Client{CAFile: ca.File, CertFile: cert, KeyFile: key}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = cardv1.NewCardServiceClient(conn).LookupActiveCards(ctx, &cardv1.LookupActiveCardsRequest{AppId: app.GetApp().GetAppId(), Identities: []string{"u_" + strings.Repeat("a", 32)}})
		conn.Close()
		if status.Code(err) != want {
			t.Errorf("card's internal LookupActiveCards with a %q certificate: %v; want %v", name, err, want)
		}
	}

	// The README's walk-through, against the gateway, over TLS.
	work := t.TempDir()
	if err := os.Symlink(bin, filepath.Join(work, "umbra")); err != nil {
		t.Fatal(err)
	}
	var script []string
	for _, line := range readmeBlock(t, "cli-round-trip") {
		if !strings.HasPrefix(line, "go build ") {
			script = append(script, line)
		}
	}
	cmd := exec.CommandContext(ctx, "sh", "-e", "-c", strings.Join(script, "\n"))
	cmd.Dir = work
	cmd.Env = append(e2eEnv(os.Environ()), "UMBRA_API_KEY="+app.GetApiKey(), "UMBRA_SERVER="+addr("gateway"), "UMBRA_TLS_CA="+ca.File)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the walk-through through the gateway failed: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	if n := strings.Count(stdout.String(), "hello bob\n"); n != 2 {
		t.Errorf("decrypted %d times through the gateway; want 2\n%s", n, &stdout)
	}

	// umbra demo, the whole story, through the gateway.
	demo := exec.CommandContext(ctx, bin, "demo")
	demo.Env = cmd.Env
	out, err := demo.CombinedOutput()
	if err != nil {
		t.Fatalf("umbra demo through the gateway: %v\n%s", err, out)
	}
	checkDemoOutput(t, string(out))
}
