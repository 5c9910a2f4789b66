package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// from returns a dialer whose connections leave from the loopback address ip, so that
// one test can be several clients (the whole of 127.0.0.0/8 is loopback on Linux).
func from(ip string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
}

// restFrom is an HTTP client whose requests come from ip.
func restFrom(ip string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: from(ip).DialContext}}
}

// grpcFrom is an identity client whose calls come from ip.
func grpcFrom(t *testing.T, addr, ip string) identityv1.IdentityServiceClient {
	t.Helper()
	d := from(ip)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return identityv1.NewIdentityServiceClient(conn)
}

// restResolve calls ResolveIdentities through REST with key, and returns the status
// and body.
func restResolve(t *testing.T, c *http.Client, base, key string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/v1/identities:resolve", strings.NewReader(`{"uids":["alice"]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestFailedCredentialsAreLimitedPerClient: a client that sends wrong app keys is
// refused (429 through REST, RESOURCE_EXHAUSTED over gRPC) once it has used up its
// failures, even with the right key, and without the key being checked; another client
// behind the same gateway, or calling gRPC directly, is not. The gateway vouches for
// its clients' addresses with the node's forwarder token, which a client cannot forge.
func TestFailedCredentialsAreLimitedPerClient(t *testing.T) {
	addrs, _ := startNodeWith(t, testAdmin, func(c *node.Config) {
		c.Gateway = &gateway.Config{Addr: "127.0.0.1:0"}
		c.AuthFailures = auth.FailureLimit{Burst: 3, Refill: time.Hour}
	})
	base := "http://" + addrs.Gateway

	key := devApp(t, base)
	wrong := key[:len(key)-4] + "AAAA"
	if wrong == key {
		wrong = key[:len(key)-4] + "BBBB"
	}
	guesser, other := restFrom("127.0.0.2"), restFrom("127.0.0.1")

	for i := range 3 {
		if code, body := restResolve(t, guesser, base, wrong); code != http.StatusUnauthorized {
			t.Fatalf("wrong key %d through REST: %d %s; want 401", i+1, code, body)
		}
	}
	// Out of failures: refused, even with the right key.
	code, body := restResolve(t, guesser, base, key)
	if code != http.StatusTooManyRequests || !strings.Contains(body, "too many failed app-key credentials") || !strings.Contains(body, "retry in") {
		t.Fatalf("right key after 3 failures through REST: %d %s; want 429 saying when to retry", code, body)
	}
	// Another client of the same gateway is not affected.
	if code, body := restResolve(t, other, base, key); code != http.StatusOK {
		t.Fatalf("right key from another client through REST: %d %s; want 200", code, body)
	}

	req := &identityv1.ResolveIdentitiesRequest{Uids: []string{"alice"}}
	withKey := func(k string, md ...string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), append([]string{"authorization", "Bearer " + k}, md...)...)
	}
	for _, tc := range []struct {
		name string
		ip   string
		ctx  context.Context
		want codes.Code
	}{
		{"the same client over gRPC", "127.0.0.2", withKey(key), codes.ResourceExhausted},
		// Naming another address takes the forwarder token, which only the gateway has.
		{"the same client naming another address", "127.0.0.2", withKey(key, auth.ClientAddrHeader, "127.0.0.9", auth.ForwarderTokenHeader, "guess"), codes.ResourceExhausted},
		{"another client over gRPC", "127.0.0.3", withKey(key), codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := grpcFrom(t, addrs.GRPC, tc.ip).ResolveIdentities(tc.ctx, req)
			if status.Code(err) != tc.want {
				t.Fatalf("ResolveIdentities: %v; want %v", err, tc.want)
			}
		})
	}

	// A flood of wrong keys from many addresses is refused the same way, and the right
	// key still works for a client that did not fail.
	for i := range 20 {
		c := grpcFrom(t, addrs.GRPC, fmt.Sprintf("127.0.1.%d", i+1))
		for range 4 {
			if _, err := c.ResolveIdentities(withKey(wrong), req); status.Code(err) != codes.Unauthenticated && status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("wrong key from 127.0.1.%d: %v", i+1, err)
			}
		}
	}
	if _, err := grpcFrom(t, addrs.GRPC, "127.0.0.4").ResolveIdentities(withKey(key), req); err != nil {
		t.Fatalf("right key from a new client after the flood: %v", err)
	}
}
