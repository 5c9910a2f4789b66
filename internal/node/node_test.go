package node

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/internal/runtest"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/services/backup"
)

var testBackupConfig = backup.Config{Secret: []byte("backup-secret-for-tests-0123456789abcdef")}

// testConfig is every role over dir, its gRPC on a free loopback port, with the tests'
// credentials (no gateway).
func testConfig(dir string) Config {
	return Config{
		Roles:           gateway.Services(),
		DataDir:         dir,
		GRPC:            grpcserver.Config{Addr: "127.0.0.1:0"},
		AdminCredential: testAdmin,
		ServiceToken:    "service-token-for-tests",
		Backup:          testBackupConfig,
	}
}

// running is Run over cfg, telling runtest when it is ready.
func running(cfg Config, log *zap.Logger) func(context.Context, func(context.Context, Addrs) error) error {
	return func(ctx context.Context, ready func(context.Context, Addrs) error) error {
		cfg.Ready = ready
		return Run(ctx, cfg, log)
	}
}

// TestEveryRegisteredMethodHasAPolicy registers every service on one server, as `umbra
// dev` does, and walks every method the server would dispatch.
func TestEveryRegisteredMethodHasAPolicy(t *testing.T) {
	t.Parallel()
	d := &deps{dataDir: t.TempDir(), log: zaptest.NewLogger(t), cfg: Config{Backup: testBackupConfig}}
	tables := []auth.Table{grpcserver.SystemPolicies()}
	var hostedServices []*hosted
	for _, r := range gateway.Services() {
		s, err := builders[r](d)
		if err != nil {
			t.Fatalf("build %s: %v", r, err)
		}
		t.Cleanup(func() { s.close() })
		hostedServices = append(hostedServices, s)
		tables = append(tables, s.policies)
	}
	table, err := auth.Merge(tables...)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0"}, auth.New(auth.Config{Policies: table}), d.log, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range hostedServices {
		s.register(srv.Server)
	}
	methods := 0
	for _, info := range srv.GetServiceInfo() {
		methods += len(info.Methods)
	}
	if err := grpcserver.CheckPolicies(srv.Server, table); err != nil {
		t.Fatal(err)
	}
	if len(table) != methods {
		t.Errorf("%d policies for %d registered methods: the tables name methods no server has", len(table), methods)
	}
	// Policies, which the gateway's gRPC proxy forwards by, are the services' tables.
	if got, want := len(Policies()), len(table)-len(grpcserver.SystemPolicies()); got != want {
		t.Errorf("Policies() has %d methods; the services register %d", got, want)
	}
	for m, p := range Policies() {
		if table[m] != p {
			t.Errorf("Policies() gives %s %v; the service's table %v", m, p, table[m])
		}
	}
	// The check is not vacuous: drop any one entry and it fails, naming the method.
	for m := range table {
		short := auth.Table{}
		for k, v := range table {
			if k != m {
				short[k] = v
			}
		}
		if err := grpcserver.CheckPolicies(srv.Server, short); err == nil || !strings.Contains(err.Error(), m) {
			t.Errorf("without %s: CheckPolicies = %v", m, err)
		}
	}
}

// TestRunHostsEveryRole starts every role and the gateway on free loopback ports and
// checks that each service reports SERVING.
func TestRunHostsEveryRole(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t.TempDir())
	cfg.Gateway = &gateway.Config{Addr: "127.0.0.1:0"}
	r := runtest.MustStart(t, "Run", running(cfg, zaptest.NewLogger(t)))
	addrs := r.Ready
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: addrs.GRPC})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	for _, s := range hostedNames(t) {
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: s})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %s: %v, %v", s, resp, err)
		}
	}
	if addrs.Gateway == "" {
		t.Error("no gateway address")
	}
	if err := r.Stop(); err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
}

// hostedNames are the gRPC service names of every role.
func hostedNames(t *testing.T) []string {
	d := &deps{dataDir: t.TempDir(), log: zaptest.NewLogger(t), cfg: Config{Backup: testBackupConfig}}
	var names []string
	for _, r := range gateway.Services() {
		s, err := builders[r](d)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, s.grpcName)
		s.close()
	}
	return names
}
