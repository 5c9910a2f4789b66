package node_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// probeEvery is the stores' probe interval in these tests.
const probeEvery = 50 * time.Millisecond

// disk makes the messaging store's disk full and frees it again.
type disk struct {
	fill, free func(t *testing.T)
}

// TestFullDiskInjected: the messaging store's commits fail with ENOSPC (injected where
// the commit would write), as on a full disk. See fullDisk for what is checked. Another
// service (identity) answers the same way.
func TestFullDiskInjected(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.StoreProbeInterval = probeEvery })
	enospc := func(path string) func() error {
		return func() error { return &fs.PathError{Op: "write", Path: path, Err: syscall.ENOSPC} }
	}
	msgs := n.Stores["messaging"]
	fullDisk(t, n, disk{
		fill: func(*testing.T) { msgs.FailCommits(enospc(msgs.Path())) },
		free: func(*testing.T) { msgs.FailCommits(nil) },
	})

	t.Run("every service", func(t *testing.T) {
		ids := n.Stores["identity"]
		ids.FailCommits(enospc(ids.Path()))
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+nodetest.Admin)
		_, err := identityv1.NewIdentityServiceClient(n.Conn()).CreateApp(ctx, &identityv1.CreateAppRequest{DisplayName: "on a full disk"})
		if s := status.Convert(err); s.Code() != codes.Unavailable || s.Message() != errs.StorageFullMessage {
			t.Fatalf("CreateApp on a full disk: %v %q; want UNAVAILABLE %q", s.Code(), s.Message(), errs.StorageFullMessage)
		}
		wantReadyz(t, n, "identity", "identity.db: writes fail: no space left")
		ids.FailCommits(nil)
		waitReady(t, n)
	})
}

// TestFullDiskReal fills a real file system: a small tmpfs mounted on the data folder in
// a mount namespace of its own (the test runs itself again under unshare(1), as root
// or with its user mapped to root). Where that is not possible it is skipped, saying
// why; TestFullDiskInjected shows the same behaviour everywhere.
func TestFullDiskReal(t *testing.T) {
	dir, inside := tmpfsInMountNamespace(t)
	if !inside {
		return
	}
	n := nodetest.Start(t, func(c *node.Config) {
		c.DataDir = dir
		c.StoreProbeInterval = probeEvery
	})
	filler := filepath.Join(dir, "filler")
	fullDisk(t, n, disk{
		fill: func(t *testing.T) {
			// Let the messaging service write down what it deferred (its index
			// entries) while there is room, so that the next write is the message.
			time.Sleep(500 * time.Millisecond)
			fillDisk(t, filler)
		},
		free: func(t *testing.T) {
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// fillDisk appends to path until the file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			return
		}
	}
}

// tmpfsSize is the size of the file system tmpfsInMountNamespace mounts.
const tmpfsSize = "24m"

// tmpfsInMountNamespace lets the calling test run on a small file system of its own.
// Called from the test as go test runs it, it runs the test again in a new process in
// a new mount namespace (unshare(1); as root, or with the user mapped to root), reports
// that run's outcome, and returns inside false: the caller returns at once. In that
// new process it mounts a tmpfs of tmpfsSize on a folder and returns it, inside true.
// Where no mount namespace can be made it skips the test, saying why.
func tmpfsInMountNamespace(t *testing.T) (dir string, inside bool) {
	const env = "UMBRA_TEST_TMPFS_DIR"
	if dir := os.Getenv(env); dir != "" {
		if err := syscall.Mount("umbra-test", dir, "tmpfs", 0, "size="+tmpfsSize+",mode=0700"); err != nil {
			t.Skipf("cannot mount a tmpfs in the new mount namespace: %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
		return dir, true
	}
	if runtime.GOOS != "linux" {
		t.Skip("a real full disk needs Linux mount namespaces (unshare)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("a real full disk needs unshare(1), which is not installed")
	}
	args := []string{"--mount"}
	if os.Geteuid() != 0 {
		args = append(args, "--map-root-user")
	}
	if out, err := exec.Command(unshare, append(args, "true")...).CombinedOutput(); err != nil {
		t.Skipf("cannot create a mount namespace here (%v: %s)", err, bytes.TrimSpace(out))
	}
	cmd := exec.Command(unshare, append(args, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")...)
	cmd.Env = append(os.Environ(), env+"="+t.TempDir())
	out, err := cmd.CombinedOutput()
	switch {
	case bytes.Contains(out, []byte("--- SKIP: "+t.Name())):
		t.Skipf("skipped in the mount namespace:\n%s", lastLines(out, 5))
	case err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())):
		t.Fatalf("in the mount namespace: %v\n%s", err, lastLines(out, 60))
	}
	t.Logf("passed in a mount namespace with a %s tmpfs:\n%s", tmpfsSize, lastLines(out, 3))
	return "", false
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// fullDisk: with the messaging store's disk full, a Send answers UNAVAILABLE (gRPC) and
// 503 (REST), saying storage is full and that a retry with the same client_message_id
// is safe; the messaging service turns NOT_SERVING and /readyz names messaging.db; the
// failed writes are counted; the store's probes do not call it healthy while the disk
// is full. Once there is room, readiness comes back with no client writing, and the
// retried message is stored once. Then, while the disk is full again, the SDK's Send
// keeps retrying and succeeds once there is room.
func fullDisk(t *testing.T, n *nodetest.Node, d disk) {
	app := n.NewApp(t)
	app.AllowPlaintextDirect(t) // opaque bytes: the point is the disk, not encryption
	alice, bob := app.User(t, "alice"), app.User(t, "bob")
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+app.Token(t, alice))
	client := messagingv1.NewMessagingServiceClient(n.Conn())
	big := bytes.Repeat([]byte("x"), 200<<10) // new pages, beyond what the file has free
	msg := func(id string) *messagingv1.SendRequest {
		return &messagingv1.SendRequest{
			ConversationId: bob, ClientMessageId: id, Envelope: big,
			Header: &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
		}
	}
	first, err := client.Send(ctx, msg("m-0"))
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, n)

	d.fill(t)
	_, err = client.Send(ctx, msg("m-1"))
	s := status.Convert(err)
	if s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "storage is full") || !strings.Contains(s.Message(), "same client_message_id is safe") {
		t.Fatalf("Send on a full disk: %v %q; want UNAVAILABLE saying storage is full and a retry with the same client_message_id is safe", s.Code(), s.Message())
	}
	code, body := n.REST(t, "POST", "/v1/conversations/"+bob+"/messages", app.Token(t, alice),
		`{"clientMessageId": "m-rest", "header": {"kind": "MESSAGE_KIND_PLAINTEXT"}, "envelope": "`+base64.StdEncoding.EncodeToString(big)+`"}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "storage is full") {
		t.Errorf("REST send on a full disk: %d %s; want 503 saying storage is full", code, body)
	}
	health := healthpb.NewHealthClient(n.Conn())
	if r, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: messagingv1.MessagingService_ServiceDesc.ServiceName}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("messaging health on a full disk: %v, %v; want NOT_SERVING", r, err)
	}
	wantReadyz(t, n, "messaging", "messaging.db: writes fail: no space left")
	if got := metric(t, n, `umbra_storage_write_failures_total{reason="no_space",store="messaging"}`); got < 1 {
		t.Errorf("umbra_storage_write_failures_total for messaging, no_space = %v; want at least 1", got)
	}
	time.Sleep(5 * probeEvery)
	wantReadyz(t, n, "messaging", "messaging.db") // the probes did not clear it

	d.free(t)
	waitReady(t, n) // by itself: nothing was sent
	// The messaging service tries the disk again a moment after its last failure:
	// retry as a client does.
	var resp *messagingv1.SendResponse
	for try := 0; ; try++ {
		resp, err = client.Send(ctx, msg("m-1"))
		if status.Code(err) != codes.Unavailable || try == 30 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || resp.GetDuplicate() || resp.GetSequence() != first.GetSequence()+1 {
		t.Fatalf("retry of m-1 once there is room: %v, %v; want stored once after m-0", resp, err)
	}

	// The SDK retries by itself until there is room, with the same client_message_id.
	c, err := sdk.New(context.Background(), sdk.Config{Addr: n.GRPC, Token: app.TokenFunc(alice), KeystorePath: filepath.Join(t.TempDir(), "keystore"), NoPassphrase: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d.fill(t)
	type result struct {
		resp *messagingv1.SendResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		r, err := c.Send(context.Background(), msg("m-2"))
		done <- result{r, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("SDK Send returned on a full disk: %v, %v", r.resp, r.err)
	case <-time.After(time.Second):
	}
	d.free(t)
	select {
	case r := <-done:
		if r.err != nil || r.resp.GetDuplicate() || r.resp.GetSequence() != resp.GetSequence()+1 {
			t.Fatalf("SDK Send once there is room: %v, %v; want stored once after m-1", r.resp, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("SDK Send still retrying 15 s after there was room")
	}
	hist, err := c.History(context.Background(), &messagingv1.HistoryRequest{ConversationId: bob, AfterSequence: new(uint64), PageSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range hist.GetMessages() {
		ids = append(ids, m.GetClientMessageId())
	}
	if strings.Join(ids, ",") != "m-0,m-1,m-2" {
		t.Errorf("stored %v; want m-0, m-1, m-2, once each", ids)
	}
}

type httpResult struct {
	status int
	body   string
}

func get(t *testing.T, url string) httpResult {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return httpResult{resp.StatusCode, string(b)}
}

// wantReadyz checks that /readyz answers 503 with service NOT_SERVING for the reason
// given.
func wantReadyz(t *testing.T, n *nodetest.Node, service, reason string) {
	t.Helper()
	r := get(t, n.HTTP+"/readyz")
	var body struct {
		Ready    bool              `json:"ready"`
		Services map[string]string `json:"services"`
		Reasons  map[string]string `json:"reasons"`
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatalf("/readyz: %d %s: %v", r.status, r.body, err)
	}
	if r.status != http.StatusServiceUnavailable || body.Ready || body.Services[service] != "NOT_SERVING" || !strings.Contains(body.Reasons[service], reason) {
		t.Errorf("/readyz: %d %s; want 503 with %s NOT_SERVING because %q", r.status, r.body, service, reason)
	}
}

// waitReady waits until /readyz answers 200.
func waitReady(t *testing.T, n *nodetest.Node) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := get(t, n.HTTP+"/readyz")
		if r.status == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %s after 5 s", r.status, r.body)
		}
		time.Sleep(probeEvery)
	}
}

// metric reads one sample of the gateway's /metrics.
func metric(t *testing.T, n *nodetest.Node, series string) float64 {
	t.Helper()
	r := get(t, n.Metrics+"/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no %s in /metrics", series)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(fmt.Errorf("%s: %w", series, err))
	}
	return v
}
