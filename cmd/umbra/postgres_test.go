package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
)

// TestServePostgres runs `umbra serve identity --store postgres://...` and `umbra
// serve card --store postgres://...` against a throwaway PostgreSQL: an app is created
// and a token issued through the one, a card published and proved through the other. A connection
// string that reaches nothing, a schema from a newer Umbra, and a role without a
// PostgreSQL engine, and the backup role started with a server secret other than the
// one its schema was created with, each exit 1 with one line that says what is wrong.
func TestServePostgres(t *testing.T) {
	bin := e2eBinary(t)
	cluster := pgtest.NewCluster(t, pgtest.Options{})
	db := cluster.NewDatabase(t)
	const admin = "postgres-e2e-admin-credential-0123456789"

	t.Run("identity and card serve over PostgreSQL", func(t *testing.T) {
		ports := map[string]int{"identity": e2eFreePort(t), "card": e2eFreePort(t)}
		dataDir := t.TempDir()
		serve := func(role string, args ...string) {
			cmd := exec.Command(bin, append([]string{"serve", role, "--insecure",
				"--grpc-addr", fmt.Sprintf("127.0.0.1:%d", ports[role]), "--data", dataDir,
				"--store", db.URL, "--admin-token", admin, "--service-token", "postgres-e2e-service-token-0123456789",
				"--log-level", "warn"}, args...)...)
			cmd.Env = e2eEnv(os.Environ())
			e2eServe(t, "umbra serve "+role, cmd, filepath.Join(t.TempDir(), "serve.log"))
		}
		serve("identity")
		serve("card", "--identity-addr", fmt.Sprintf("127.0.0.1:%d", ports["identity"]))
		conn, err := grpcclient.Dial(grpcclient.Config{Addr: fmt.Sprintf("127.0.0.1:%d", ports["identity"])})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		client := identityv1.NewIdentityServiceClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		adminCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+admin)
		created, err := client.CreateApp(adminCtx, &identityv1.CreateAppRequest{DisplayName: "over PostgreSQL"}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatal(err)
		}
		appCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+created.GetApiKey())
		ids, err := client.ResolveIdentities(appCtx, &identityv1.ResolveIdentitiesRequest{Uids: []string{"alice"}})
		if err != nil {
			t.Fatal(err)
		}
		alice := ids.GetUsers()["alice"]
		tok, err := client.IssueToken(appCtx, &identityv1.IssueTokenRequest{Identity: alice})
		if err != nil {
			t.Fatal(err)
		}
		keys, err := client.GetSigningKeys(ctx, &identityv1.GetSigningKeysRequest{})
		if err != nil || len(keys.GetKeys()) != 1 {
			t.Fatalf("GetSigningKeys: %v, %v", keys, err)
		}
		if parts := strings.Split(tok.GetAccessToken(), "."); len(parts) != 3 {
			t.Fatalf("access token %q is no JWT", tok.GetAccessToken())
		}
		// The app is in the identity service's schema, and nothing in the data folder.
		var n int
		if err := queryInt(db, "SELECT count(*) FROM umbra_identity.apps WHERE app_id = $1", &n, created.GetApp().GetAppId()); err != nil || n != 1 {
			t.Errorf("the app's row in umbra_identity.apps: %d, %v", n, err)
		}

		// alice publishes a card; it is in the card service's schema, and the key
		// transparency log proves it.
		cardConn, err := grpcclient.Dial(grpcclient.Config{Addr: fmt.Sprintf("127.0.0.1:%d", ports["card"])})
		if err != nil {
			t.Fatal(err)
		}
		defer cardConn.Close()
		cards := cardv1.NewCardServiceClient(cardConn)
		kp, err := e2ee.GenerateKeyPair(e2ee.SuiteX25519)
		if err != nil {
			t.Fatal(err)
		}
		content, sig, err := e2ee.NewCard(kp, alice, time.Now(), nil)
		if err != nil {
			t.Fatal(err)
		}
		userCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok.GetAccessToken())
		var published *cardv1.PublishCardResponse
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			// UNAVAILABLE until the card service has read the revocation feed once.
			published, err = cards.PublishCard(userCtx, &cardv1.PublishCardRequest{Content: content, SelfSignature: sig}, grpc.WaitForReady(true))
			if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := queryInt(db, "SELECT count(*) FROM umbra_card.cards WHERE card_id = $1", &n, published.GetCard().GetCardId()); err != nil || n != 1 {
			t.Errorf("the card's row in umbra_card.cards: %d, %v", n, err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			resp, err := cards.SearchCardsWithProofs(userCtx, &cardv1.SearchCardsWithProofsRequest{Identities: []string{alice}})
			if err == nil && len(resp.GetResults()) == 1 && resp.GetResults()[0].GetCard() != nil {
				if !bytes.Equal(resp.GetResults()[0].GetCard().GetCardId(), published.GetCard().GetCardId()) {
					t.Errorf("the log proves card %x; want %x", resp.GetResults()[0].GetCard().GetCardId(), published.GetCard().GetCardId())
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no checkpoint proves alice's card 15 s after it was published: %v, %v", resp, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if entries, _ := os.ReadDir(dataDir); len(entries) != 0 {
			t.Errorf("the data folder holds %d entries", len(entries))
		}
	})

	// The database of the refusals below: its schema is at a version from the future.
	future := cluster.NewDatabase(t)
	future.Exec(t, "CREATE SCHEMA umbra_identity")
	future.Exec(t, "CREATE TABLE umbra_identity.goose_db_version (id serial PRIMARY KEY, version_id bigint NOT NULL, is_applied boolean NOT NULL, tstamp timestamp DEFAULT now())")
	future.Exec(t, "INSERT INTO umbra_identity.goose_db_version (version_id, is_applied) VALUES (0, true), (999, true)")
	future.Exec(t, "CREATE SCHEMA umbra_messaging")
	future.Exec(t, "CREATE TABLE umbra_messaging.goose_db_version (id serial PRIMARY KEY, version_id bigint NOT NULL, is_applied boolean NOT NULL, tstamp timestamp DEFAULT now())")
	future.Exec(t, "INSERT INTO umbra_messaging.goose_db_version (version_id, is_applied) VALUES (0, true), (999, true)")

	// The backup service's schema, its server secret's check value stored by a first
	// start with backupSecret.
	const backupSecret = "postgres-e2e-backup-secret-0123456789abcdef"
	openCtx, openCancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer openCancel()
	firstBackup, err := backup.OpenPostgresStore(openCtx, db.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backup.New(firstBackup, nil, backup.Config{Secret: []byte(backupSecret)}, nil); err != nil {
		t.Fatal(err)
	}
	firstBackup.Close()

	unreachable := fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/umbra?sslmode=disable&connect_timeout=2", cluster.Password(), e2eFreePort(t))
	cases := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unreachable", []string{"serve", "identity", "--store", unreachable}, nil, "cannot reach PostgreSQL at 127.0.0.1:"},
		{"wrong password", []string{"serve", "identity", "--store", cluster.URLAs(pgtest.Superuser, "not-the-password", db.Name)}, nil, `refused the user "postgres"`},
		{"schema from the future", []string{"serve", "identity", "--store", future.URL}, nil, "is at version 999, written by a newer Umbra; this binary knows versions up to 1"},
		{"messaging, schema from the future", []string{"serve", "messaging", "--identity-addr", "127.0.0.1:1", "--card-addr", "127.0.0.1:1", "--group-addr", "127.0.0.1:1", "--store", future.URL}, nil, "messaging store: the schema umbra_messaging in database"},
		{"backup with another server secret", []string{"serve", "backup", "--store", db.URL, "--backup-secret", strings.ToUpper(backupSecret), "--identity-addr", "127.0.0.1:1", "--messaging-addr", "127.0.0.1:1"}, nil, "the server secret is not the one the backup store (backup.db, or the schema umbra_backup) was created with"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append(tc.args, "--insecure", "--grpc-addr", fmt.Sprintf("127.0.0.1:%d", e2eFreePort(t)), "--http-addr", "127.0.0.1:0", "--data", dataDir, "--admin-token", admin)
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = append(e2eEnv(os.Environ()), tc.env...)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("umbra %s: %v; want exit 1\n%s", strings.Join(tc.args[:2], " "), err, out)
			}
			var errLines []string
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if strings.HasPrefix(line, "umbra serve: ") {
					errLines = append(errLines, line)
				}
			}
			if len(errLines) != 1 || !strings.Contains(errLines[0], tc.want) {
				t.Errorf("output:\n%s\nwant one line \"umbra serve: ...\" saying %q", out, tc.want)
			}
			if strings.Contains(string(out), cluster.Password()) {
				t.Errorf("the output shows the database password:\n%s", out)
			}
			if entries, _ := os.ReadDir(dataDir); len(entries) != 0 {
				t.Errorf("the refused start wrote %d entries in the data folder", len(entries))
			}
		})
	}
	// Nothing was written in the schema from the future.
	var n int
	for _, schema := range []string{"umbra_identity", "umbra_messaging"} {
		if err := queryInt(future, "SELECT count(*) FROM pg_tables WHERE schemaname = $1", &n, schema); err != nil || n != 1 {
			t.Errorf("the schema %s from the future has %d tables (%v), want its version table only", schema, n, err)
		}
	}
}

func queryInt(db *pgtest.Database, sql string, n *int, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql, args...).Scan(n)
}

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
