package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
)

// TestAdminMigrate moves a deployment from bbolt to PostgreSQL with the real binary:
// `umbra dev` on bbolt, data written with the CLI (keys and cards, a group, a backup),
// the node stopped, `umbra admin migrate`, then `umbra serve all --store postgres://...`
// and the same data read back with the CLI: the cards with their key transparency
// proofs against the checkpoints the clients kept from before, the group, the backup's
// attempt budget. The copy refuses while the node runs, says so when run again, and
// refuses a schema changed behind its back, naming the kind. A copy killed half way
// leaves the store it was copying empty, and runs again to the end.
func TestAdminMigrate(t *testing.T) {
	bin := e2eBinary(t)
	cluster := pgtest.NewCluster(t, pgtest.Options{})
	db := cluster.NewDatabase(t)
	dataDir := filepath.Join(t.TempDir(), "umbra-data")
	grpcPort, httpPort := e2eFreePorts(t)
	p := e2eStartDev(t, bin, dataDir, grpcPort, httpPort)

	work := t.TempDir()
	env := append(e2eEnv(os.Environ()), "UMBRA_API_KEY="+p.apiKey, fmt.Sprintf("UMBRA_SERVER=127.0.0.1:%d", grpcPort),
		"UMBRA_PASSPHRASE=a local keystore passphrase")
	// The CLI runs against the node started above (not one in the test process), each
	// user with a home of its own.
	c := &cliNode{t: t, bin: bin, work: work, env: env}
	umbra := func(user string, args ...string) (string, string, int) {
		t.Helper()
		r := c.on(user, "", []string{"UMBRA_USER=" + user}, args...)
		return r.stdout, r.stderr, r.exit
	}
	ok := func(user string, args ...string) string {
		t.Helper()
		return c.succeeded(c.on(user, "", []string{"UMBRA_USER=" + user}, args...), args)
	}
	pwFile := filepath.Join(work, "password.txt")
	if err := os.WriteFile(pwFile, []byte("my backup password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob"} {
		ok(u, "login", u)
		ok(u, "keys", "init")
	}
	ok("alice", "keys", "rotate")
	wantIn(t, "create", ok("alice", "group", "create", "--members", "bob", "family"), "group family created")
	ok("alice", "group", "send", "family", "hello family")
	wantIn(t, "bob listens", ok("bob", "group", "listen", "--from-start", "--until-caught-up", "family"), ": hello family")
	wantIn(t, "backup", ok("alice", "backup", "create", "--password-file", pwFile), "backed up (version 1)")
	if _, errOut, code := umbra("bob", "backup", "restore", "--password-stdin"); code == 0 {
		t.Fatalf("a restore without a backup succeeded: %s", errOut)
	}
	wantIn(t, "lookup", ok("alice", "kt", "lookup", "bob"), "bob")
	wantIn(t, "lookup", ok("bob", "kt", "lookup", "alice"), "alice")
	cardsBefore := ok("alice", "card", "history", "alice")

	to := db.URL
	migrate := func(args ...string) (string, string, int) {
		t.Helper()
		return umbra("operator", append([]string{"admin", "migrate", "--from", dataDir, "--to", to}, args...)...)
	}
	// The copy needs what it copies: the group and messaging stores are written by the
	// running node, whose files are locked.
	if _, errOut, code := migrate(); code != 1 || !strings.Contains(errOut, "stop the") {
		t.Fatalf("migrate while the node runs: exit %d, %s", code, errOut)
	}
	p.stop(t)
	stores := "identity,card,backup,group,messaging"

	// Killed half way: the group store's copy is held in its transaction (another
	// session holds the statements table against writes), and the process is killed
	// there. The stores copied before stay; the group schema holds nothing.
	if _, _, code := migrate("--store", "group", "--verify"); code != 1 { // makes the schema: empty, so it differs
		t.Fatalf("verify before any copy: exit %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	holder, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	hold, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, "LOCK TABLE umbra_group.statements IN EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	killed := exec.Command(bin, "admin", "migrate", "--from", dataDir, "--to", to, "--store", stores)
	killed.Env = c.env
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var waiting int
		if err := hold.QueryRow(ctx, "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'umbra_group.statements'::regclass").Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			killed.Process.Kill()
			t.Fatal("the copy did not reach the group's statements within 30 s")
		}
	}
	killed.Process.Kill()
	killed.Wait()
	var apps, groups int
	if err := hold.QueryRow(ctx, "SELECT (SELECT count(*) FROM umbra_identity.apps), (SELECT count(*) FROM umbra_group.groups)").Scan(&apps, &groups); err != nil {
		t.Fatal(err)
	}
	if apps != 1 || groups != 0 {
		t.Fatalf("after a copy killed in the group's transaction: %d apps (want the 1 copied before), %d groups (want none)", apps, groups)
	}
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// Run again: the stores copied before are exact copies, the others are copied.
	out, errOut, code := migrate("--store", stores)
	if code != 0 {
		t.Fatalf("migrate: exit %d\n%s\n%s", code, out, errOut)
	}
	wantIn(t, "migrate", out, "identity -> schema umbra_identity: an exact copy of the file", "card -> schema umbra_card: an exact copy of the file",
		"backup -> schema umbra_backup: an exact copy of the file", "group -> schema umbra_group: copied and verified",
		"messaging -> schema umbra_messaging: copied and verified", "inbox", "kt_checkpoints", "copied and verified into PostgreSQL")
	out, _, code = migrate("--store", stores)
	if code != 0 || strings.Count(out, "an exact copy of the file, verified (nothing written)") != 5 {
		t.Fatalf("migrate again: exit %d\n%s", code, out)
	}
	if out, _, code = migrate("--store", stores, "--verify"); code != 0 {
		t.Fatalf("migrate --verify: exit %d\n%s", code, out)
	}

	// The node over PostgreSQL, with the folder's secrets: the app's API key, the admin
	// credential and the backup secret are those of umbra dev.
	var creds struct {
		Admin  string `json:"admin_credential"`
		Backup string `json:"backup_secret"`
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "dev-credentials.json"))
	if err == nil {
		err = json.Unmarshal(b, &creds)
	}
	if err != nil {
		t.Fatal(err)
	}
	grpcPort, httpPort = e2eFreePorts(t)
	c.env = append(c.env, fmt.Sprintf("UMBRA_SERVER=127.0.0.1:%d", grpcPort))
	serve := exec.Command(bin, "serve", "all", "--insecure",
		"--grpc-addr", fmt.Sprintf("127.0.0.1:%d", grpcPort), "--http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--data", t.TempDir(), "--store", db.URL, "--admin-token", creds.Admin,
		"--service-token", "migrate-test-service-token-0123456789", "--log-level", "warn")
	serve.Env = append(e2eEnv(os.Environ()), "UMBRA_BACKUP_SECRET="+creds.Backup)
	e2eServe(t, "umbra serve all --store", serve, filepath.Join(t.TempDir(), "serve.log"))

	// Read back: the cards, proved by the copied log against what each client kept.
	waitFor := func(what string, fn func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !fn(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30 s", what)
			}
		}
	}
	waitFor("the node over PostgreSQL answers", func() bool { _, _, code := umbra("alice", "kt", "lookup", "bob"); return code == 0 })
	wantIn(t, "lookup over the copy", ok("bob", "kt", "lookup", "alice"), "alice")
	if got := ok("alice", "card", "history", "alice"); got != cardsBefore {
		t.Errorf("alice's card history over the copy:\n%s\nwas\n%s", got, cardsBefore)
	}
	ok("alice", "kt", "audit")
	wantIn(t, "groups over the copy", ok("bob", "group", "list"), "member, 2 members")
	wantIn(t, "bob listens over the copy", ok("bob", "group", "listen", "--from-start", "--until-caught-up", "family"), ": hello family")
	ok("alice", "group", "send", "family", "after the move")
	wantIn(t, "bob listens after the move", ok("bob", "group", "listen", "--from-start", "--until-caught-up", "family"), ": hello family", ": after the move")
	wantIn(t, "backup over the copy", ok("alice", "backup", "status"), "password  version 1, 10 of 10 attempts left")
	// New writes go on from the copy: a new user's card is appended to the log, which
	// alice's client checks against the checkpoint it kept.
	ok("carol", "login", "carol")
	ok("carol", "keys", "init")
	waitFor("carol's card in the log", func() bool { _, _, code := umbra("alice", "kt", "lookup", "carol"); return code == 0 })
	ok("alice", "kt", "audit")
	ok("alice", "group", "add", "family", "carol")
	wantIn(t, "groups after a change", ok("carol", "group", "list"), "member, 3 members")

	// A row changed behind the copy's back is found, and named.
	if err := cluster.Exec(db.Name, "UPDATE umbra_backup.slots SET record = record || '\\x00'::bytea"); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := migrate("--store", "backup", "--verify"); code != 1 || !strings.Contains(errOut, "backup_slots:") || !strings.Contains(out, "DIFFERS") {
		t.Errorf("verify a changed copy: exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestAdminMigrateRefusals: what `umbra admin migrate` refuses before it reaches a
// database, in the process.
func TestAdminMigrateRefusals(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "stores.json"), []byte(`{"format": 1, "stores": ["identity"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no --to", []string{"--from", dir}, "usage: umbra admin migrate"},
		{"not PostgreSQL", []string{"--from", dir, "--to", "mysql://db/umbra"}, "--to takes a PostgreSQL connection string"},
		{"UMBRA_STORE's connection string as --store", []string{"--from", dir, "--to", "postgres://db/umbra", "--store", "postgres://db/umbra"}, "is UMBRA_STORE"},
		{"a store the manifest lists, missing", []string{"--from", dir, "--to", "postgres://db/umbra"}, "identity.db is missing, but"},
		{"an unknown store", []string{"--from", dir, "--to", "postgres://db/umbra", "--store", "cards"}, `there is no store "cards"`},
		{"a store not in the folder", []string{"--from", dir, "--to", "postgres://db/umbra", "--store", "card"}, "holds no card store"},
		{"no folder", []string{"--from", filepath.Join(dir, "nothing"), "--to", "postgres://db/umbra"}, "is not a data folder"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			code := run(context.Background(), append([]string{"admin", "migrate"}, tc.args...), &stdout, &stderr)
			if code == 0 || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("exit %d, stderr %q; want a failure saying %q", code, stderr.String(), tc.want)
			}
		})
	}
}
