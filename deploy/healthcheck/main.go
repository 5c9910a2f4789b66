// Command umbra-healthcheck asks an Umbra service for its gRPC health status
// (grpc.health.v1.Health/Check) over TLS, with the pod's own certificate for mTLS, and
// exits 0 only when the service is SERVING.
//
// It is the Kubernetes readiness and liveness probe of the services (an exec probe).
// The kubelet's own gRPC probe speaks plaintext; its TLS mode is an alpha feature gate
// (GRPCContainerProbeTLS, off by default), and Umbra's services serve gRPC only over TLS.
// The defaults are the paths and port the manifests in deploy/k8s use.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run checks once and returns the exit code: 0 serving, 1 not serving or unreachable,
// 2 bad arguments.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("umbra-healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9090", "gRPC address of the service")
	service := fs.String("service", "", "service name to check, e.g. umbra.identity.v1.IdentityService (empty: the whole server)")
	serverName := fs.String("server-name", "", "name the service's certificate must hold (the role: identity, card...)")
	caFile := fs.String("ca", "/etc/umbra/tls/ca.crt", "CA that signs the service's certificate")
	certFile := fs.String("cert", "/etc/umbra/tls/tls.crt", "client certificate, for services that require one")
	keyFile := fs.String("key", "/etc/umbra/tls/tls.key", "key of --cert")
	timeout := fs.Duration("timeout", 2*time.Second, "how long the check may take")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "umbra-healthcheck: unexpected arguments %q\n", fs.Args())
		return 2
	}
	status, err := check(*addr, *service, *timeout, tlsconf.Client{CAFile: *caFile, CertFile: *certFile, KeyFile: *keyFile, ServerName: *serverName})
	if err != nil {
		fmt.Fprintf(stderr, "umbra-healthcheck: %s: %v\n", *addr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s %s\n", serviceLabel(*service), status)
	if status != healthpb.HealthCheckResponse_SERVING {
		return 1
	}
	return 0
}

func check(addr, service string, timeout time.Duration, tc tlsconf.Client) (healthpb.HealthCheckResponse_ServingStatus, error) {
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: addr, TLS: tc})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return 0, err
	}
	return resp.GetStatus(), nil
}

func serviceLabel(s string) string {
	if s == "" {
		return "server"
	}
	return s
}
