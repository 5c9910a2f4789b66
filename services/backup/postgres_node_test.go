package backup_test

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
)

// TestPostgresReplicas: two backup replicas, each a node of its own, over one
// PostgreSQL database, behind one node that serves identity and messaging (as in a
// cluster). A backup stored through one replica is restored through the other; wrong
// guesses alternating between them spend one budget, the last one erases the slot,
// and the owner hears of it once in its stream; nothing is written in the replicas'
// data folders, and a dump of the schema holds no secret; and a third replica started
// with another server secret is refused.
func TestPostgresReplicas(t *testing.T) {
	db := pgtest.NewDatabase(t)
	hub := nodetest.Start(t, func(cfg *node.Config) {
		cfg.Roles = []string{gateway.Identity, gateway.Messaging}
		cfg.Gateway, cfg.MetricsAddr = nil, ""
	})
	replicaConfig := func(cfg *node.Config) {
		cfg.Roles = []string{gateway.Backup}
		cfg.Store = db.URL
		cfg.Gateway, cfg.MetricsAddr = nil, ""
		cfg.Peers.Identity = grpcclient.Config{Addr: hub.GRPC}
		cfg.Peers.Messaging = grpcclient.Config{Addr: hub.GRPC}
	}
	replicas := []*nodetest.Node{nodetest.Start(t, replicaConfig), nodetest.Start(t, replicaConfig)}

	a := hub.NewApp(t)
	id := a.User(t, "alice")
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+a.Token(t, id))
	via := make([]nodeClient, len(replicas))
	for i, r := range replicas {
		via[i] = nodeClient{identity: id, ctx: ctx, backup: backupv1.NewBackupServiceClient(r.Conn()), msg: messagingv1.NewMessagingServiceClient(hub.Conn())}
	}

	if v := via[0].put(t, "the password", 0); v != 1 {
		t.Fatalf("version %d", v)
	}
	if resp, err := via[1].restore(t, "the password"); err != nil || resp.GetVersion() != 1 {
		t.Fatalf("restore through the other replica: %v, %v", resp, err)
	}

	// Bob's backup stays, and a dump of the schema, as an operator's backup holds it,
	// is scanned below.
	bobID := a.User(t, "bob")
	bob := via[1]
	bob.identity = bobID
	bob.ctx = metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+a.Token(t, bobID))
	bob.put(t, "bob's password", 0)
	ev, bobKey, err := bob.evaluate(t, backupv1.EvaluationPurpose_EVALUATION_PURPOSE_RESTORE, "bob's password")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.backup.Restore(bob.ctx, &backupv1.RestoreRequest{Slot: backupv1.BackupSlot_BACKUP_SLOT_PASSWORD, AuthKey: bobKey, ExpectedVersion: ev.GetOprfKeyVersion()}); err != nil {
		t.Fatal(err)
	}
	dumpHoldsNoSecret(t, db, bobKey, "ciphertext of bob's password")

	items := servicetest.SubscribeFromStart(t, ctx, via[0].msg, 16).Items
	spendAllAttempts(t, via...)
	for i := range via {
		if _, err := via[i].restore(t, "the password"); status.Code(err) != codes.NotFound {
			t.Errorf("restore through replica %d after the erasure: %v; want NOT_FOUND", i, err)
		}
	}

	events := 0
	quiet := time.After(15 * time.Second)
wait:
	for {
		select {
		case it, ok := <-items:
			if !ok {
				break wait
			}
			ev := it.GetEvent()
			if ev == nil {
				continue
			}
			var be backupv1.BackupEvent
			if err := proto.Unmarshal(ev.GetPayload(), &be); err != nil || be.GetKind() != backupv1.BackupEventKind_BACKUP_EVENT_KIND_ERASED || be.GetVersion() != 1 {
				t.Fatalf("event %v (%v)", &be, err)
			}
			if events++; events == 1 {
				quiet = time.After(time.Second) // time for a second delivery to show
			}
		case <-quiet:
			break wait
		}
	}
	if events != 1 {
		t.Errorf("alice's stream had %d erasure events; want 1", events)
	}
	if n := countRows(t, db, "SELECT count(*) FROM umbra_backup.outbox"); n != 0 {
		t.Errorf("%d events left in the outbox after delivery", n)
	}
	for i, r := range replicas {
		if entries, _ := os.ReadDir(r.DataDir); len(entries) != 0 {
			t.Errorf("replica %d's data folder holds %d entries; a store in PostgreSQL writes none", i, len(entries))
		}
	}

	// Another server secret would turn every stored backup into one no password opens.
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	cfg := node.Config{
		DataDir:      t.TempDir(),
		GRPC:         grpcserver.Config{Addr: "127.0.0.1:0"},
		ServiceToken: nodetest.ServiceToken,
		Backup:       backup.Config{Secret: []byte(strings.ToUpper(nodetest.BackupSecret))},
		Ready:        func(context.Context, node.Addrs) error { return errors.New("the replica started") },
	}
	replicaConfig(&cfg)
	if err := node.Run(rctx, cfg, zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), "the server secret is not the one") {
		t.Errorf("a replica with another secret: %v; want a refusal", err)
	}
}

func countRows(t *testing.T, db *pgtest.Database, sql string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// dumpHoldsNoSecret: a pg_dump of the schema umbra_backup holds neither the server
// secret (nor either half of it) nor the auth key, in any form the dump writes bytes
// in; it does hold the secret's check value and ciphertext (the proof that the scan
// read a dump with the records in it).
func dumpHoldsNoSecret(t *testing.T, db *pgtest.Database, authKey []byte, ciphertext string) {
	t.Helper()
	bin, err := pgtest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "pg_dump"), "--schema", backup.Schema, "--dbname", db.URL).Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	dump := strings.ToLower(string(out))
	secret := []byte(nodetest.BackupSecret)
	forms := func(b []byte) []string {
		return []string{string(b), hex.EncodeToString(b), base64.StdEncoding.EncodeToString(b)}
	}
	for what, b := range map[string][]byte{
		"the server secret": secret, "half of the server secret": secret[:len(secret)/2],
		"the server secret's last half": secret[len(secret)/2:], "the auth key": authKey,
	} {
		for _, f := range forms(b) {
			if strings.Contains(dump, strings.ToLower(f)) {
				t.Errorf("the dump of %s contains %s (as %q)", backup.Schema, what, f)
			}
		}
	}
	check, err := hkdf.Key(sha256.New, secret, nil, "umbra backup v1 secret check", 16)
	if err != nil {
		t.Fatal(err)
	}
	for what, b := range map[string][]byte{"the secret's check value": check, "a stored ciphertext": []byte(ciphertext)} {
		if !strings.Contains(dump, hex.EncodeToString(b)) {
			t.Errorf("the dump of %s lacks %s: the scan read the wrong dump", backup.Schema, what)
		}
	}
}
