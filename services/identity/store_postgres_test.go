package identity

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/internal/storetest"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	identitystoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/identity/v1"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openPostgres opens the store of the database at url, closed when t ends.
var openPostgres = pgtest.Opener(OpenPostgresStore)

// postgresEngine is the PostgreSQL engine for the conformance suite: a database of the
// test's own, and for replicas a store (a pool) each over it, as replicas in several
// processes have.
var postgresEngine = storetest.Database[Store](pgtest.NewURL, openPostgres)

func TestPostgresStore(t *testing.T) { testStore(t, postgresEngine) }

// openBesideTx opens a store on a database of the test's own, and a transaction on a
// connection of its own to that database, beside the store's.
func openBesideTx(t *testing.T) (*PostgresStore, pgx.Tx) {
	t.Helper()
	db := pgtest.NewDatabase(t)
	s := openPostgres(t, db.URL)
	tx, err := db.Conn(t).Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s, tx
}

// TestPostgresFeedFollowsCommitOrder: while a revocation's transaction is open, the
// next one waits for it, and the feed shows neither; so a follower that has read
// sequence n has read every sequence below it. (A database sequence would hand out n+1
// at once and commit it first, and a follower past n+1 would skip n for good.)
func TestPostgresFeedFollowsCommitOrder(t *testing.T) {
	s, tx := openBesideTx(t)
	ctx := context.Background()
	// A slow revocation, half done: its sequence taken, not yet committed.
	if _, err := tx.Exec(ctx, "SET LOCAL search_path = "+Schema); err != nil {
		t.Fatal(err)
	}
	var last int64
	if err := tx.QueryRow(ctx, "UPDATE revocation_sequence SET last = last + 1 RETURNING last").Scan(&last); err != nil {
		t.Fatal(err)
	}
	rec, _ := records.Encode(&identitystoragev1.RevocationRecord{Sequence: uint64(last), AppId: "app_a", Identity: "u_slow"})
	if _, err := tx.Exec(ctx, "INSERT INTO revocations (app_id, identity, sequence, record) VALUES ('app_a', 'u_slow', $1, $2)", last, rec); err != nil {
		t.Fatal(err)
	}

	type result struct {
		seq uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := s.Revoke("app_a", "u_fast", t0)
		done <- result{r.GetSequence(), err}
	}()
	select {
	case r := <-done:
		t.Fatalf("a revocation committed (sequence %d, %v) while an earlier one was open", r.seq, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	if recs, latest, err := s.Revocations(0, 10); err != nil || len(recs) != 0 || latest != 0 {
		t.Fatalf("the feed while the first revocation is open: %v, latest %d, %v; want nothing", recs, latest, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.seq != 2 {
		t.Fatalf("the waiting revocation: sequence %d, %v; want 2", r.seq, r.err)
	}
	recs, latest, err := s.Revocations(0, 10)
	if err != nil || latest != 2 || len(recs) != 2 || recs[0].GetIdentity() != "u_slow" || recs[1].GetIdentity() != "u_fast" {
		t.Errorf("feed = %v, latest %d, %v; want u_slow then u_fast", recs, latest, err)
	}
}

// TestPostgresRollbackLeavesNoGap: a revocation whose transaction rolls back gives its
// sequence back.
func TestPostgresRollbackLeavesNoGap(t *testing.T) {
	s, tx := openBesideTx(t)
	ctx := context.Background()
	if _, err := tx.Exec(ctx, "UPDATE "+Schema+".revocation_sequence SET last = last + 1"); err != nil {
		t.Fatal(err)
	}
	tx.Rollback(ctx)
	r, err := s.Revoke("app_a", "u_x", t0)
	if err != nil || r.GetSequence() != 1 {
		t.Errorf("after a rolled-back revocation: sequence %d, %v; want 1", r.GetSequence(), err)
	}
}

// TestPostgresDamagedRecord: a row whose record does not parse is reported damaged,
// naming the table and the key for the log, and is not served.
func TestPostgresDamagedRecord(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := openPostgres(t, db.URL)
	if _, err := s.Revoke("app_a", "u_x", t0); err != nil {
		t.Fatal(err)
	}
	db.Exec(t, "UPDATE "+Schema+".revocations SET record = '\\xffffffff'")
	_, err := s.Revocation("app_a", "u_x")
	if !errors.Is(err, errs.ErrDamaged) || !strings.Contains(err.Error(), "revocations") || !strings.Contains(err.Error(), "app_a/u_x") {
		t.Errorf("Revocation of a damaged row: %v, want ErrDamaged naming the table and key", err)
	}
	if _, _, err := s.Revocations(0, 10); !errors.Is(err, errs.ErrDamaged) {
		t.Errorf("Revocations over a damaged row: %v, want ErrDamaged", err)
	}
}

// TestPostgresSchema: the tables are in the identity service's own schema.
func TestPostgresSchema(t *testing.T) {
	pgtest.WantTables(t, openPostgres, "[umbra_identity.app_keys umbra_identity.apps umbra_identity.goose_db_version umbra_identity.revocation_sequence umbra_identity.revocations umbra_identity.signing_keys]")
}
