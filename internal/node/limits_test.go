package node

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/messaging"
)

// runNode runs every role, without the gateway, until the test ends and returns the
// gRPC address.
func runNode(t *testing.T) string {
	t.Helper()
	return runAll(t, func(c *Config) { c.Gateway = nil }).GRPC
}

func bearer(cred string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+cred)
}

// TestRequestLimits: each method refuses, with RESOURCE_EXHAUSTED and the limit, an
// authenticated request over what it can legitimately carry: kilobytes for ids, the
// envelope limit for Send, and gRPC's own limit, the largest, for everything; requests
// within their method's limit go through.
func TestRequestLimits(t *testing.T) {
	t.Parallel()
	addr := runNode(t)
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ids := identityv1.NewIdentityServiceClient(conn)
	msgs := messagingv1.NewMessagingServiceClient(conn)
	created, err := ids.CreateApp(bearer(testAdmin), &identityv1.CreateAppRequest{DisplayName: "limits"})
	if err != nil {
		t.Fatal(err)
	}
	key := created.GetApiKey()
	resolved, err := ids.ResolveIdentities(bearer(key), &identityv1.ResolveIdentitiesRequest{Uids: []string{"alice", "bob"}})
	if err != nil {
		t.Fatal(err)
	}
	alice, bob := resolved.GetUsers()["alice"], resolved.GetUsers()["bob"]
	// Opaque bytes without a card: the point is their size, not encryption.
	if _, err := msgs.UpdateAppSettings(bearer(testAdmin), &messagingv1.UpdateAppSettingsRequest{
		AppId: created.GetApp().GetAppId(), Settings: &messagingv1.AppSettings{AllowPlaintextDirect: true}}); err != nil {
		t.Fatal(err)
	}
	tok, err := ids.IssueToken(bearer(key), &identityv1.IssueTokenRequest{Identity: alice})
	if err != nil {
		t.Fatal(err)
	}
	send := func(envelope int) error {
		_, err := msgs.Send(bearer(tok.GetAccessToken()), &messagingv1.SendRequest{
			ConversationId: bob, ClientMessageId: strings.Repeat("m", 8) + string(rune('a'+envelope%26)),
			Header:   &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
			Envelope: make([]byte, envelope),
		})
		return err
	}
	for _, tc := range []struct {
		name string
		call func() error
		want codes.Code
		msg  string
	}{
		{"a small method within its limit", func() error {
			_, err := ids.GetApp(bearer(testAdmin), &identityv1.GetAppRequest{AppId: created.GetApp().GetAppId()})
			return err
		}, codes.OK, ""},
		{"a small method over its limit", func() error {
			_, err := ids.GetApp(bearer(testAdmin), &identityv1.GetAppRequest{AppId: strings.Repeat("x", grpcserver.DefaultSmallRecvBytes)})
			return err
		}, codes.ResourceExhausted, "65536-byte limit of /umbra.identity.v1.IdentityService/GetApp"},
		{"Send at the envelope limit", func() error { return send(messaging.DefaultMaxEnvelopeBytes) }, codes.OK, ""},
		{"Send over the envelope limit, within the request's room", func() error { return send(messaging.DefaultMaxEnvelopeBytes + 1) }, codes.InvalidArgument, "envelope"},
		{"Send over its request limit", func() error { return send(messaging.DefaultMaxEnvelopeBytes + requestRoom + 1) }, codes.ResourceExhausted, "-byte limit of /umbra.messaging.v1.MessagingService/Send"},
		{"a batch over the bulk limit", func() error {
			_, err := ids.ResolveIdentities(bearer(key), &identityv1.ResolveIdentitiesRequest{Uids: []string{strings.Repeat("u", BulkRecvBytes)}})
			return err
		}, codes.ResourceExhausted, ""},
		{"anything over the server's limit", func() error {
			_, err := ids.GetApp(bearer(testAdmin), &identityv1.GetAppRequest{AppId: strings.Repeat("x", 2<<20)})
			return err
		}, codes.ResourceExhausted, "larger than max"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != tc.want || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("%v; want %v with %q", err, tc.want, tc.msg)
			}
		})
	}
}

// TestRecvLimitsOfEveryMethod: every method the node serves has a request limit, the
// limits are those of the classes of requestLimits' comment, and none is above the
// server's limit.
func TestRecvLimitsOfEveryMethod(t *testing.T) {
	t.Parallel()
	d := &deps{dataDir: t.TempDir(), log: zaptest.NewLogger(t), cfg: Config{Backup: testBackupConfig}}
	cfg := requestLimits(grpcserver.Config{Addr: "127.0.0.1:0"}, messaging.Config{})
	srv, err := grpcserver.New(cfg, auth.New(auth.Config{}), d.log, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range gateway.Services() {
		s, err := builders[r](d)
		if err != nil {
			t.Fatalf("build %s: %v", r, err)
		}
		t.Cleanup(func() { s.close() })
		s.register(srv)
	}
	want := map[string]int{
		"/umbra.identity.v1.IdentityService/WhoAmI":              grpcserver.DefaultSmallRecvBytes,
		"/umbra.identity.v1.IdentityService/ResolveIdentities":   BulkRecvBytes,
		groupv1.GroupService_CommitEpoch_FullMethodName:          BulkRecvBytes,
		messagingv1.MessagingService_Send_FullMethodName:         messaging.DefaultMaxEnvelopeBytes + requestRoom,
		messagingv1.MessagingService_SendStream_FullMethodName:   messaging.DefaultMaxEnvelopeBytes + requestRoom,
		messagingv1.MessagingService_Subscribe_FullMethodName:    grpcserver.DefaultSmallRecvBytes,
		"/umbra.backup.v1.BackupService/PutBackup":               cfg.MaxRecvBytes,
		"/umbra.card.v1.CardService/SearchCards":                 BulkRecvBytes,
		"/umbra.messaging.v1.MessagingService/PublishEvent":      BulkRecvBytes,
		"/umbra.group.v1.GroupService/GetGroup":                  grpcserver.DefaultSmallRecvBytes,
		"/umbra.identity.v1.IdentityService/GetSigningKeys":      grpcserver.DefaultSmallRecvBytes,
		"/umbra.messaging.v1.MessagingService/History":           grpcserver.DefaultSmallRecvBytes,
		"/umbra.backup.v1.BackupService/Evaluate":                BulkRecvBytes,
		"/umbra.identity.v1.IdentityService/CreateApp":           grpcserver.DefaultSmallRecvBytes,
		"/umbra.card.v1.CardService/PublishCard":                 BulkRecvBytes,
		"/umbra.group.v1.GroupService/CreateGroup":               BulkRecvBytes,
		"/umbra.messaging.v1.MessagingService/ListConversations": grpcserver.DefaultSmallRecvBytes,
	}
	methods := 0
	for svc, info := range srv.GetServiceInfo() {
		for _, m := range info.Methods {
			name := "/" + svc + "/" + m.Name
			if strings.HasPrefix(svc, "grpc.") {
				continue
			}
			methods++
			n, ok := srv.RecvLimit(name)
			if !ok || n > cfg.MaxRecvBytes {
				t.Errorf("%s: limit %d, %v; want one, at most %d", name, n, ok, cfg.MaxRecvBytes)
			}
			if w, ok := want[name]; ok && n != w {
				t.Errorf("%s: limit %d; want %d", name, n, w)
			}
		}
	}
	if methods < 40 {
		t.Errorf("only %d methods registered", methods)
	}
}

// TestKeepaliveEnforcement: the server closes the connection of a client that pings
// more often than KeepaliveMinTime ("too_many_pings") and announces its stream limit;
// the project's own client pings no more often than the server allows.
func TestKeepaliveEnforcement(t *testing.T) {
	if grpcclient.KeepaliveTime < grpcserver.KeepaliveMinTime {
		t.Fatalf("grpcclient pings every %s, more often than servers allow (%s)", grpcclient.KeepaliveTime, grpcserver.KeepaliveMinTime)
	}
	addr := runNode(t)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var maxStreams uint32
	for i := range 10 {
		if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			break // the server may have closed the connection already
		}
	}
	var goAway *http2.GoAwayFrame
	for goAway == nil {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read: %v (no GOAWAY for a client pinging 10 times at once)", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
				maxStreams = v
			}
		case *http2.GoAwayFrame:
			goAway = f
		}
	}
	if f := goAway; f.ErrCode != http2.ErrCodeEnhanceYourCalm || !bytes.Equal(f.DebugData(), []byte("too_many_pings")) {
		t.Errorf("GOAWAY %v %q; want ENHANCE_YOUR_CALM too_many_pings", f.ErrCode, f.DebugData())
	}
	if maxStreams != grpcserver.DefaultMaxConcurrentStreams {
		t.Errorf("server announced at most %d concurrent streams; want %d", maxStreams, grpcserver.DefaultMaxConcurrentStreams)
	}

	// Umbra's client, busy: its flow-control (BDP) pings, which follow the server's
	// data, are not held against it.
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ids := identityv1.NewIdentityServiceClient(conn)
	deadline := time.Now().Add(2 * time.Second)
	for calls := 0; time.Now().Before(deadline); calls++ {
		if _, err := ids.GetSigningKeys(context.Background(), &identityv1.GetSigningKeysRequest{}); err != nil {
			t.Fatalf("call %d on a busy grpcclient connection: %v", calls, err)
		}
	}
}
