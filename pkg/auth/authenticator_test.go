package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
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
		if got, _ := errs.Code(err); got != want {
			t.Errorf("%s: %v, want %v", method, err, want)
		}
	}
}

// TestInternalPolicyOverMTLS runs a real TLS server with a client CA: a caller whose
// verified certificate names an allowed service gets in; another name, no certificate,
// or the service token's absence do not.
func TestInternalPolicyOverMTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	serverCert, serverKey := ca.issue(t, dir, "server", "localhost")
	cardCert, cardKey := ca.issue(t, dir, "card", "card")
	gwCert, gwKey := ca.issue(t, dir, "gateway", "gateway")
	caFile := filepath.Join(dir, "ca.pem")
	writePEM(t, caFile, "CERTIFICATE", ca.cert.Raw)
	other := newCA(t)
	strangerCert, strangerKey := other.issue(t, dir, "stranger", "card")

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
		"allowed service certificate":     {cardCert, cardKey, "", codes.OK},
		"certificate of the gateway":      {gwCert, gwKey, "", codes.PermissionDenied},
		"no client certificate":           {"", "", "", codes.PermissionDenied},
		"service token without a cert":    {"", "", "the-service-token", codes.OK},
		"wrong service token":             {"", "", "guess", codes.PermissionDenied},
		"allowed name from a foreign CA":  {strangerCert, strangerKey, "", codes.Unavailable},
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

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "umbra test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

var serial int64 = 100

// issue writes a certificate for dnsName (usable by servers and clients) and its key.
func (ca *testCA) issue(t *testing.T, dir, file, dnsName string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: dnsName},
		DNSNames:     []string{dnsName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, file+".pem"), filepath.Join(dir, file+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
