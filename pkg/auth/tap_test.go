package auth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/umbra-e2ee/umbra/internal/clocktest"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs/errstatus"
)

// fromPeer is a server context of a call from addr, with a verified client
// certificate named cert when cert is set.
func fromPeer(addr, cert string) context.Context {
	p := &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(addr), Port: 40000}}
	if cert != "" {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: cert}, DNSNames: []string{cert}}
		p.AuthInfo = credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}}
	}
	return peer.NewContext(context.Background(), p)
}

const testJWT = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJ1In0.c2ln"

// TestTapHandle: the tap refuses, from the headers alone, a call whose policy needs a
// credential it does not carry in a plausible shape, and lets through public methods,
// plausible credentials (which the interceptor checks in full) and services with a
// verified certificate.
func TestTapHandle(t *testing.T) {
	a := auth.New(auth.Config{
		Policies: auth.Table{
			"/svc/Public": auth.Public, "/svc/Admin": auth.Admin, "/svc/AppKey": auth.AppKey,
			"/svc/Token": auth.AccessToken, "/svc/Internal": auth.Internal,
		},
		AdminCredential: "the-admin-credential",
		ServiceToken:    "the-service-token",
		ServicePeers:    []string{"card"},
	})
	bearer := func(s string) metadata.MD { return metadata.Pairs("authorization", "Bearer "+s) }
	for _, tc := range []struct {
		name, method string
		ctx          context.Context
		md           metadata.MD
		want         codes.Code
	}{
		{"public without a credential", "/svc/Public", fromPeer("127.0.0.1", ""), nil, codes.OK},
		{"unknown method", "/svc/Nope", fromPeer("127.0.0.1", ""), nil, codes.OK},
		{"token: none", "/svc/Token", fromPeer("127.0.0.1", ""), nil, codes.Unauthenticated},
		{"token: not a bearer", "/svc/Token", fromPeer("127.0.0.1", ""), metadata.Pairs("authorization", "Basic eA=="), codes.Unauthenticated},
		{"token: two headers", "/svc/Token", fromPeer("127.0.0.1", ""), metadata.Pairs("authorization", "Bearer "+testJWT, "authorization", "Bearer "+testJWT), codes.Unauthenticated},
		{"token: two parts", "/svc/Token", fromPeer("127.0.0.1", ""), bearer("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0"), codes.Unauthenticated},
		{"token: not base64url", "/svc/Token", fromPeer("127.0.0.1", ""), bearer("eyJ+.eyJ.sig"), codes.Unauthenticated},
		{"token: header not JSON", "/svc/Token", fromPeer("127.0.0.1", ""), bearer("aGVsbG8.eyJzdWIiOiJ1In0.c2ln"), codes.Unauthenticated},
		{"token: an app key", "/svc/Token", fromPeer("127.0.0.1", ""), bearer("uak_abc_def"), codes.Unauthenticated},
		{"token: plausible", "/svc/Token", fromPeer("127.0.0.1", ""), bearer(testJWT), codes.OK},
		{"token: alg none (no signature)", "/svc/Token", fromPeer("127.0.0.1", ""), bearer("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0."), codes.OK},
		{"app key: none", "/svc/AppKey", fromPeer("127.0.0.1", ""), nil, codes.Unauthenticated},
		{"app key: an access token", "/svc/AppKey", fromPeer("127.0.0.1", ""), bearer(testJWT), codes.Unauthenticated},
		{"app key: control characters", "/svc/AppKey", fromPeer("127.0.0.1", ""), bearer("uak_a\x01b"), codes.Unauthenticated},
		{"app key: plausible", "/svc/AppKey", fromPeer("127.0.0.1", ""), bearer("uak_keyid_secret"), codes.OK},
		{"admin: none", "/svc/Admin", fromPeer("127.0.0.1", ""), nil, codes.Unauthenticated},
		{"admin: too long", "/svc/Admin", fromPeer("127.0.0.1", ""), bearer(string(make([]byte, auth.MaxCredentialLen+1))), codes.Unauthenticated},
		{"admin: plausible (checked later)", "/svc/Admin", fromPeer("127.0.0.1", ""), bearer("a-guess"), codes.OK},
		{"internal: nothing", "/svc/Internal", fromPeer("127.0.0.1", ""), nil, codes.PermissionDenied},
		{"internal: an access token", "/svc/Internal", fromPeer("127.0.0.1", ""), bearer(testJWT), codes.PermissionDenied},
		{"internal: a service token (checked later)", "/svc/Internal", fromPeer("127.0.0.1", ""), metadata.Pairs(auth.ServiceTokenHeader, "a-guess"), codes.OK},
		{"internal: a verified service certificate", "/svc/Internal", fromPeer("127.0.0.1", "card"), nil, codes.OK},
		{"internal: a certificate of another name", "/svc/Internal", fromPeer("127.0.0.1", "gateway"), nil, codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.TapHandle()(tc.ctx, &tap.Info{FullMethodName: tc.method, Header: tc.md})
			if got := status.Code(err); got != tc.want {
				t.Fatalf("tap: %v; want %v", err, tc.want)
			}
		})
	}
}

// TestFailureLimit: after Burst failed credentials of a kind a source is refused,
// without its credential being checked (the right one included), until a failure has
// been forgiven; other sources and other kinds are not affected; IPv6 sources count per /64; a forwarder
// vouches for its client's address only with its token; and the sources remembered
// are bounded.
func TestFailureLimit(t *testing.T) {
	clk := clocktest.New(time.Unix(1_700_000_000, 0))
	a := auth.New(auth.Config{
		Policies:        auth.Table{"/svc/Admin": auth.Admin, "/svc/Internal": auth.Internal},
		AdminCredential: "the-admin-credential",
		ServiceToken:    "the-service-token",
		ForwarderToken:  "the-forwarder-token",
		Failures:        auth.FailureLimit{Burst: 3, Refill: time.Minute, MaxSources: 50, Clock: clk.Now},
	})
	call := func(ctx context.Context, method string, md ...string) codes.Code {
		t.Helper()
		ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(md...))
		_, err := a.Authenticate(ctx, method)
		code, _ := errstatus.Code(err)
		if err == nil {
			code = codes.OK
		}
		// The tap agrees about sources that are out of failures.
		if _, terr := a.TapHandle()(ctx, &tap.Info{FullMethodName: method, Header: metadata.Pairs(md...)}); code == codes.ResourceExhausted && status.Code(terr) != code {
			t.Errorf("tap let a source out of failures through: %v", terr)
		}
		return code
	}
	admin := func(ip, cred string, md ...string) codes.Code {
		t.Helper()
		return call(fromPeer(ip, ""), "/svc/Admin", append([]string{"authorization", "Bearer " + cred}, md...)...)
	}
	for i := range 3 {
		if got := admin("127.0.0.2", "guess"); got != codes.Unauthenticated {
			t.Fatalf("guess %d: %v", i+1, got)
		}
	}
	if got := admin("127.0.0.2", "the-admin-credential"); got != codes.ResourceExhausted {
		t.Fatalf("right credential after 3 failures: %v; want ResourceExhausted", got)
	}
	if got := admin("127.0.0.3", "the-admin-credential"); got != codes.OK {
		t.Fatalf("right credential from another source: %v", got)
	}
	// Each kind of credential counts apart: the source's failed admin credentials do
	// not lock out its service token, and its failed service tokens do.
	internal := func(token string) codes.Code {
		t.Helper()
		return call(fromPeer("127.0.0.2", ""), "/svc/Internal", auth.ServiceTokenHeader, token)
	}
	if got := internal("the-service-token"); got != codes.OK {
		t.Fatalf("right service token from a source out of admin failures: %v", got)
	}
	for range 3 {
		if got := internal("guess"); got != codes.PermissionDenied {
			t.Fatalf("wrong service token: %v", got)
		}
	}
	if got := internal("the-service-token"); got != codes.ResourceExhausted {
		t.Fatalf("right service token from a source out of service-token failures: %v", got)
	}
	clk.Add(time.Minute)
	if got := admin("127.0.0.2", "the-admin-credential"); got != codes.OK {
		t.Fatalf("right credential a minute later: %v", got)
	}

	// IPv6: one /64 is one source.
	for i := range 3 {
		admin(fmt.Sprintf("2001:db8::%d", i+1), "guess")
	}
	if got := admin("2001:db8::ffff", "the-admin-credential"); got != codes.ResourceExhausted {
		t.Fatalf("another address of the same /64: %v; want ResourceExhausted", got)
	}
	if got := admin("2001:db8:0:1::1", "the-admin-credential"); got != codes.OK {
		t.Fatalf("another /64: %v", got)
	}

	// A forwarder names its client with its token; without it the header is ignored.
	fwd := func(client, token string) []string {
		return []string{auth.ClientAddrHeader, client, auth.ForwarderTokenHeader, token}
	}
	for range 3 {
		admin("127.0.0.5", "guess", fwd("198.51.100.7", "the-forwarder-token")...)
	}
	if got := admin("127.0.0.5", "the-admin-credential", fwd("198.51.100.7", "the-forwarder-token")...); got != codes.ResourceExhausted {
		t.Fatalf("the forwarded client out of failures: %v", got)
	}
	if got := admin("127.0.0.5", "the-admin-credential", fwd("198.51.100.8", "the-forwarder-token")...); got != codes.OK {
		t.Fatalf("another client of the same forwarder: %v", got)
	}
	for range 3 {
		admin("127.0.0.6", "guess", fwd("198.51.100.9", "not-the-token")...)
	}
	if got := admin("127.0.0.6", "the-admin-credential", fwd("198.51.100.10", "not-the-token")...); got != codes.ResourceExhausted {
		t.Fatalf("a caller without the forwarder token naming another address: %v; want its own address refused", got)
	}

	// A forwarder trusted by its certificate over mTLS needs no token.
	b := auth.New(auth.Config{
		Policies:        auth.Table{"/svc/Admin": auth.Admin},
		AdminCredential: "the-admin-credential",
		ForwarderPeers:  []string{"gateway"},
		Failures:        auth.FailureLimit{Burst: 1, Refill: time.Hour, Clock: clk.Now},
	})
	viaCert := func(cert, client, cred string) codes.Code {
		t.Helper()
		ctx := metadata.NewIncomingContext(fromPeer("127.0.0.7", cert), metadata.Pairs("authorization", "Bearer "+cred, auth.ClientAddrHeader, client))
		_, err := b.Authenticate(ctx, "/svc/Admin")
		code, _ := errstatus.Code(err)
		if err == nil {
			code = codes.OK
		}
		return code
	}
	viaCert("gateway", "198.51.100.1", "guess")
	if got := viaCert("gateway", "198.51.100.1", "the-admin-credential"); got != codes.ResourceExhausted {
		t.Fatalf("the client of a gateway trusted by its certificate, out of failures: %v", got)
	}
	if got := viaCert("gateway", "198.51.100.2", "the-admin-credential"); got != codes.OK {
		t.Fatalf("another client of that gateway: %v", got)
	}
	viaCert("card", "198.51.100.3", "guess")
	if got := viaCert("card", "198.51.100.4", "the-admin-credential"); got != codes.ResourceExhausted {
		t.Fatalf("a caller whose certificate is no forwarder, naming another address: %v; want its own address refused", got)
	}

	// Many sources: the limit remembers at most MaxSources.
	for i := range 500 {
		admin(fmt.Sprintf("127.1.%d.%d", i/250, i%250+1), "guess")
	}
	if n := auth.FailureSources(a); n > 50 {
		t.Fatalf("%d sources remembered; want at most 50", n)
	}
}
