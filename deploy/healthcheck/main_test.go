package main

import (
	"bytes"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf/tlstest"
)

// TestProbeAgainstAnMTLSServer runs the probe against a gRPC server that, like the
// services in deploy/k8s, serves only TLS and requires a client certificate.
func TestProbeAgainstAnMTLSServer(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "umbra")
	serverCert, serverKey := ca.Issue(t, dir, "identity")
	clientCert, clientKey := ca.Issue(t, dir, "prober")
	other := tlstest.NewCA(t, filepath.Join(dir), "other")

	tc, err := tlsconf.Server{CertFile: serverCert, KeyFile: serverKey, ClientCAFile: ca.File, RequireClientCert: true}.Config()
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	hs.SetServingStatus("umbra.identity.v1.IdentityService", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("umbra.card.v1.CardService", healthpb.HealthCheckResponse_NOT_SERVING)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	base := []string{"--addr", lis.Addr().String(), "--ca", ca.File, "--cert", clientCert, "--key", clientKey, "--timeout", "3s"}
	for _, tc := range []struct {
		name string
		args []string
		want int
		out  string
	}{
		{"serving service", []string{"--service", "umbra.identity.v1.IdentityService", "--server-name", "identity"}, 0, "umbra.identity.v1.IdentityService SERVING"},
		{"whole server", []string{"--server-name", "identity"}, 0, "server SERVING"},
		{"service not serving", []string{"--service", "umbra.card.v1.CardService", "--server-name", "identity"}, 1, "NOT_SERVING"},
		{"service unknown to the server", []string{"--service", "umbra.nope.v1.Nope", "--server-name", "identity"}, 1, "NotFound"},
		{"certificate for another name", []string{"--server-name", "card"}, 1, "certificate"},
		{"server signed by another CA", []string{"--server-name", "identity", "--ca", other.File}, 1, "certificate"},
		{"no client certificate", []string{"--server-name", "identity", "--cert", "", "--key", ""}, 1, ""},
		{"stray argument", []string{"identity"}, 2, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append(append([]string{}, base...), tc.args...), &stdout, &stderr)
			if code != tc.want {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.want, &stdout, &stderr)
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, tc.out) {
				t.Errorf("output %q does not mention %q", out, tc.out)
			}
		})
	}
}
