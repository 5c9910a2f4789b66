package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
)

// TestServeGroupPostgres runs `umbra serve group --store postgres://...` twice over
// one throwaway PostgreSQL, as two replicas: both migrate the schema umbra_group (once)
// and serve, writing nothing in their data folders. A schema from a newer Umbra is
// refused with one line that says so. (The replicas' behaviour is services/group's
// tests; this is the binary's wiring.)
func TestServeGroupPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: builds the umbra binary and runs it against PostgreSQL")
	}
	bin := e2eBinary(t)
	cluster := pgtest.NewCluster(t, pgtest.Options{})
	db := cluster.NewDatabase(t)
	// Peers that are not there: the group service starts without them, and refuses
	// what needs them.
	peers := []string{"--identity-addr", "127.0.0.1:1", "--card-addr", "127.0.0.1:1", "--messaging-addr", "127.0.0.1:1"}
	for i := range 2 {
		port := e2eFreePort(t)
		dataDir := t.TempDir()
		logPath := filepath.Join(t.TempDir(), "serve.log")
		args := append([]string{"serve", "group", "--insecure", "--grpc-addr", fmt.Sprintf("127.0.0.1:%d", port), "--http-addr", "127.0.0.1:0",
			"--data", dataDir, "--store", db.URL, "--log-level", "warn"}, peers...)
		cmd := exec.Command(bin, args...)
		cmd.Env = e2eEnv(os.Environ())
		e2eServe(t, fmt.Sprintf("replica %d", i+1), cmd, logPath)
		conn, err := grpcclient.Dial(grpcclient.Config{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "umbra.group.v1.GroupService"}, grpc.WaitForReady(true))
		cancel()
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("replica %d: health %v, %v; want SERVING", i+1, resp.GetStatus(), err)
		}
		if entries, _ := os.ReadDir(dataDir); len(entries) != 0 {
			t.Errorf("replica %d: the data folder holds %d entries", i+1, len(entries))
		}
	}
	var n int
	if err := queryInt(db, "SELECT count(*) FROM umbra_group.goose_db_version WHERE version_id > 0", &n); err != nil || n != 1 {
		t.Errorf("umbra_group's migrations applied %d times (%v); want once", n, err)
	}

	// A schema from a newer Umbra is refused, untouched.
	future := cluster.NewDatabase(t)
	future.Exec(t, "CREATE SCHEMA umbra_group")
	future.Exec(t, "CREATE TABLE umbra_group.goose_db_version (id serial PRIMARY KEY, version_id bigint NOT NULL, is_applied boolean NOT NULL, tstamp timestamp DEFAULT now())")
	future.Exec(t, "INSERT INTO umbra_group.goose_db_version (version_id, is_applied) VALUES (0, true), (999, true)")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"serve", "group", "--insecure", "--grpc-addr", fmt.Sprintf("127.0.0.1:%d", e2eFreePort(t)), "--http-addr", "127.0.0.1:0",
		"--data", t.TempDir(), "--store", future.URL}, peers...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = e2eEnv(os.Environ())
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("umbra serve group over a schema from the future: %v; want exit 1\n%s", err, out)
	}
	if want := "the schema umbra_group in database"; !strings.Contains(string(out), want) || !strings.Contains(string(out), "version 999, written by a newer Umbra") {
		t.Errorf("output:\n%s\nwant it to say that umbra_group is at version 999, from a newer Umbra", out)
	}
	if err := queryInt(future, "SELECT count(*) FROM pg_tables WHERE schemaname = 'umbra_group'", &n); err != nil || n != 1 {
		t.Errorf("the schema from the future has %d tables (%v), want its version table only", n, err)
	}
}
