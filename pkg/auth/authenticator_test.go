package auth_test

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs/errstatus"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf/tlstest"
)

func TestMergeRefusesDuplicates(t *testing.T) {
	if _, err := auth.Merge(auth.Table{"/a/B": auth.Public}, auth.Table{"/a/B": auth.Admin}); err == nil {
		t.Fatal("a method with two policies was accepted")
	}
	got, err := auth.Merge(auth.Table{"/a/B": auth.Public}, auth.Table{"/a/C": auth.Admin})
	if err != nil || len(got) != 2 {
		t.Fatalf("Merge = %v, %v", got, err)
	}
}

func TestAuthenticateFailsClosed(t *testing.T) {
	a := auth.New(auth.Config{Policies: auth.Table{
		"/svc/Public":   auth.Public,
		"/svc/Admin":    auth.Admin,
		"/svc/AppKey":   auth.AppKey,
		"/svc/Token":    auth.AccessToken,
		"/svc/Internal": auth.Internal,
		"/svc/Zero":     auth.Policy(0),
	}})
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer x", auth.ServiceTokenHeader, "x"))
	for method, want := range map[string]codes.Code{
		"/svc/Missing":  codes.PermissionDenied, // no entry: refused
		"/svc/Zero":     codes.PermissionDenied, // no policy: refused
		"/svc/Admin":    codes.PermissionDenied, // no admin credential configured
		"/svc/AppKey":   codes.PermissionDenied, // no app-key verifier
		"/svc/Token":    codes.PermissionDenied, // no token verifier
		"/svc/Internal": codes.PermissionDenied, // neither service token nor peers configured
		"/svc/Public":   codes.OK,
	} {
		_, err := a.Authenticate(ctx, method)
		if got, _ := errstatus.Code(err); got != want {
			t.Errorf("%s: %v, want %v", method, err, want)
		}
	}
}

// TestInternalPolicyOverMTLS runs a real TLS server with a client CA: a caller whose
// verified certificate names an allowed service gets in; another name, no certificate,
// or the service token's absence do not.
func TestInternalPolicyOverMTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "umbra")
	serverCert, serverKey := ca.Issue(t, dir, "localhost")
	cardCert, cardKey := ca.Issue(t, dir, "card")
	gwCert, gwKey := ca.Issue(t, dir, "gateway")
	caFile := ca.File
	other := tlstest.NewCA(t, dir, "other")
	strangerDir := t.TempDir() // the same name as the real card's files
	strangerCert, strangerKey := other.Issue(t, strangerDir, "card")

	table := grpcserver.SystemPolicies()
	table["/grpc.health.v1.Health/Check"] = auth.Internal
	a := auth.New(auth.Config{Policies: table, ServicePeers: []string{"card", "messaging"}, ServiceToken: "the-service-token"})
	srv, err := grpcserver.New(grpcserver.Config{
		Addr: "127.0.0.1:0",
		TLS:  tlsconf.Server{CertFile: serverCert, KeyFile: serverKey, ClientCAFile: caFile},
	}, a, zaptest.NewLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, lis); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	check := func(cert, key, token string) codes.Code {
		t.Helper()
		conn, err := grpcclient.Dial(grpcclient.Config{
			Addr:         lis.Addr().String(),
			TLS:          tlsconf.Client{CAFile: caFile, CertFile: cert, KeyFile: key, ServerName: "localhost"},
			ServiceToken: token,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		_, err = healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
		return status.Code(err)
	}
	for name, tc := range map[string]struct {
		cert, key, token string
		want             codes.Code
	}{
		"allowed service certificate":  {cardCert, cardKey, "", codes.OK},
		"certificate of the gateway":   {gwCert, gwKey, "", codes.PermissionDenied},
		"no client certificate":        {"", "", "", codes.PermissionDenied},
		"service token without a cert": {"", "", "the-service-token", codes.OK},
		"wrong service token":          {"", "", "guess", codes.PermissionDenied},
		// The client does not even offer a certificate the server's CAs did not sign.
		"allowed name from a foreign CA":  {strangerCert, strangerKey, "", codes.PermissionDenied},
		"gateway cert plus a wrong token": {gwCert, gwKey, "guess", codes.PermissionDenied},
	} {
		t.Run(name, func(t *testing.T) {
			if got := check(tc.cert, tc.key, tc.token); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPlaintextOnlyOnLoopback(t *testing.T) {
	a := auth.New(auth.Config{Policies: grpcserver.SystemPolicies()})
	if _, err := grpcserver.New(grpcserver.Config{Addr: "0.0.0.0:9090"}, a, zaptest.NewLogger(t), nil); err == nil {
		t.Error("plaintext on every interface was accepted")
	}
	if _, err := grpcserver.New(grpcserver.Config{Addr: "0.0.0.0:9090", Insecure: true}, a, zaptest.NewLogger(t), nil); err != nil {
		t.Errorf("plaintext with --insecure: %v", err)
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:9090", "localhost:9090"} {
		if _, err := grpcserver.New(grpcserver.Config{Addr: addr}, a, zaptest.NewLogger(t), nil); err != nil {
			t.Errorf("plaintext on %s: %v", addr, err)
		}
	}
	if _, err := grpcclient.Dial(grpcclient.Config{Addr: "10.1.2.3:9090"}); err == nil {
		t.Error("a plaintext connection beyond loopback was allowed")
	}
}
