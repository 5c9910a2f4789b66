package backup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/internal/storetest"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	backupstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/backup/v1"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openPostgres opens the store of the database at url, closed when t ends.
var openPostgres = pgtest.Opener(OpenPostgresStore)

// postgresEngine is the PostgreSQL engine for the conformance suite: a database of the
// test's own, and for replicas a store (a pool) each over it, as replicas in several
// processes have.
var postgresEngine = storetest.Database[Store](pgtest.NewURL, openPostgres)

func TestPostgresStore(t *testing.T) { testStore(t, postgresEngine) }

// TestPostgresGuessWaitsForTheSlot: while one update holds a slot (another replica's
// guess, half done), the next update of that slot waits for it and then reads what it
// wrote; so a guess is never counted against a budget another has already spent.
func TestPostgresGuessWaitsForTheSlot(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := openPostgres(t, db.URL)
	mustUpdate(t, s, "app_a", "u_a", 1, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
		r.RemainingAttempts = 2
		return Change{Write: true}, nil
	})
	ctx := context.Background()
	conn := db.ConnIn(t, Schema)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// The other replica's guess: the slot read FOR UPDATE, one attempt spent, not yet
	// committed.
	var b []byte
	if err := tx.QueryRow(ctx, "SELECT record FROM slots WHERE app_id = 'app_a' AND identity = 'u_a' AND slot = 1 FOR UPDATE").Scan(&b); err != nil {
		t.Fatal(err)
	}
	rec := &backupstoragev1.BackupSlotRecord{}
	if err := decode("slots", "x", b, rec); err != nil {
		t.Fatal(err)
	}
	rec.RemainingAttempts--
	b, _ = records.Encode(rec)
	if _, err := tx.Exec(ctx, "UPDATE slots SET record = $1 WHERE app_id = 'app_a' AND identity = 'u_a' AND slot = 1", b); err != nil {
		t.Fatal(err)
	}

	done := make(chan uint32, 1)
	go func() {
		out, err := s.UpdateSlot("app_a", "u_a", 1, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
			r.RemainingAttempts--
			return Change{Write: true}, nil
		})
		if err != nil {
			t.Error(err)
		}
		done <- out.GetRemainingAttempts()
	}()
	select {
	case left := <-done:
		t.Fatalf("a guess went through (%d left) while another held the slot", left)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if left := <-done; left != 0 {
		t.Errorf("the waiting guess left %d attempts; want 0 (it must see the other's spent attempt)", left)
	}
}

// TestPostgresOutboxLease: while a replica delivers the outbox the others' claims get
// nothing; when it stops without letting go (killed), another takes over once its
// lease has run out; when it closes, another takes over at once.
func TestPostgresOutboxLease(t *testing.T) {
	db := pgtest.NewDatabase(t)
	a, b, c := openPostgres(t, db.URL), openPostgres(t, db.URL), openPostgres(t, db.URL)
	for _, s := range []*PostgresStore{a, b, c} {
		s.lease = time.Second
	}
	for i := range 3 {
		mustUpdate(t, a, "app_a", fmt.Sprint("u_", i), 1, bump(true))
	}
	evs, err := a.ClaimOutbox(1)
	if err != nil || len(evs) != 1 {
		t.Fatalf("a's claim: %v, %v", evs, err)
	}
	if got, err := b.ClaimOutbox(10); err != nil || len(got) != 0 {
		t.Fatalf("b's claim while a delivers: %v, %v; want nothing", got, err)
	}
	// a renews its lease with each delete, and keeps it past the first lease.
	time.Sleep(600 * time.Millisecond)
	if err := a.DeleteOutbox(evs[0].GetSequence()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond)
	if got, err := b.ClaimOutbox(10); err != nil || len(got) != 0 {
		t.Fatalf("b's claim after a renewed: %v, %v; want nothing", got, err)
	}
	// a stops answering: once its lease has run out, b delivers, from the oldest.
	time.Sleep(1200 * time.Millisecond)
	got, err := b.ClaimOutbox(10)
	if err != nil || len(got) != 2 || got[0].GetIdentity() != "u_1" {
		t.Fatalf("b's claim after a's lease ran out: %v, %v; want u_1 and u_2", got, err)
	}
	if got, err := a.ClaimOutbox(10); err != nil || len(got) != 0 {
		t.Fatalf("a's claim once b holds the lease: %v, %v; want nothing", got, err)
	}
	// b closes (a replica's clean stop): c takes over at once.
	b.Close()
	if got, err := c.ClaimOutbox(10); err != nil || len(got) != 2 {
		t.Fatalf("c's claim after b closed: %v, %v; want both events", got, err)
	}
}

// TestPostgresDamagedRecord: a row whose record does not parse, or names another
// slot, is reported damaged, naming the table and the key for the log, and is not
// served or updated.
func TestPostgresDamagedRecord(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := openPostgres(t, db.URL)
	mustUpdate(t, s, "app_a", "u_a", 1, bump(true))
	mustUpdate(t, s, "app_a", "u_b", 1, bump(false))
	db.Exec(t, "UPDATE "+Schema+".slots SET record = '\\xffffffff' WHERE identity = 'u_a'")
	db.Exec(t, "UPDATE "+Schema+".outbox SET record = '\\xffffffff'")
	other, _ := records.Encode(freshSlot("app_a", "u_c", 1))
	db.Exec(t, "UPDATE "+Schema+".slots SET record = $1 WHERE identity = 'u_b'", other)
	for name, call := range map[string]func() error{
		"Slot":        func() error { _, err := s.Slot("app_a", "u_a", 1); return err },
		"Slots":       func() error { _, err := s.Slots("app_a", "u_a"); return err },
		"UpdateSlot":  func() error { _, err := s.UpdateSlot("app_a", "u_a", 1, bump(false)); return err },
		"Outbox":      func() error { _, err := s.Outbox(10); return err },
		"ClaimOutbox": func() error { _, err := s.ClaimOutbox(10); return err },
		"misnamed":    func() error { _, err := s.UpdateSlot("app_a", "u_b", 1, bump(false)); return err },
	} {
		err := call()
		if !errors.Is(err, errs.ErrDamaged) || !strings.Contains(err.Error(), Schema+".") {
			t.Errorf("%s over a damaged row: %v, want ErrDamaged naming the table", name, err)
		}
	}
}

// TestPostgresSchema: the tables are in the backup service's own schema.
func TestPostgresSchema(t *testing.T) {
	pgtest.WantTables(t, openPostgres, "[umbra_backup.goose_db_version umbra_backup.outbox umbra_backup.outbox_delivery umbra_backup.server_state umbra_backup.slots]")
}
