package group

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/internal/storetest"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openPostgres opens the store of the database at url, closed when t ends.
var openPostgres = pgtest.Opener(OpenPostgresStore)

// postgresEngine is the PostgreSQL engine for the conformance suite: a database of the
// test's own, and for replicas a store (a pool) each over it, as replicas in several
// processes have.
var postgresEngine = storeEngine{
	Engine: storetest.Database[Store](pgtest.NewURL, openPostgres),
}

func TestPostgresStore(t *testing.T) { testStore(t, postgresEngine) }

// TestPostgresBatchWaitsHoldingNoLock: a batch's transaction never waits for a group
// while it holds another: the call that needs a group another transaction holds runs
// on its own afterwards, and the batch's other calls commit meanwhile. (Were it to
// wait, two batches taking two groups in opposite orders would deadlock, and each call
// behind would wait with it.)
func TestPostgresBatchWaitsHoldingNoLock(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := openPostgres(t, db.URL)
	update(t, s, func(tx Tx) error {
		for _, g := range []string{testGroupA, testGroupB} {
			if err := tx.PutGroup(&storagev1.GroupRecord{AppId: testApp, GroupId: g}); err != nil {
				return err
			}
		}
		return nil
	})
	// Another replica's transaction holds group B.
	conn := db.ConnIn(t, Schema)
	ctx := context.Background()
	other, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx)
	if _, err := other.Exec(ctx, "SELECT 1 FROM groups WHERE app_id = $1 AND group_id = $2 FOR UPDATE", testApp, testGroupB); err != nil {
		t.Fatal(err)
	}
	bump := func(g string) func(Tx) error {
		return func(tx Tx) error {
			rec, err := tx.Group(testApp, g)
			if err != nil {
				return err
			}
			rec.EpochMessageCount++
			return tx.PutGroup(rec)
		}
	}
	// One batch: A first (taken), then B (held elsewhere).
	doneA, doneB := make(chan error, 1), make(chan error, 1)
	go func() { doneA <- s.Batch(bump(testGroupA)) }()
	time.Sleep(time.Millisecond)
	go func() { doneB <- s.Batch(bump(testGroupB)) }()
	select {
	case err := <-doneA:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the call on group A waited for group B, which it does not touch")
	}
	select {
	case err := <-doneB:
		t.Fatalf("the call on group B returned (%v) while another transaction holds B", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := other.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-doneB; err != nil {
		t.Fatal(err)
	}
	view(t, s, func(tx Tx) error {
		for _, g := range []string{testGroupA, testGroupB} {
			if rec, err := tx.Group(testApp, g); err != nil || rec.GetEpochMessageCount() != 1 {
				t.Errorf("group %s counted %d (%v), want 1", g, rec.GetEpochMessageCount(), err)
			}
		}
		return nil
	})
}

// TestPostgresOutboxClaim: while a replica holds the claim on the outbox the others
// get nothing; a claim lapses after OutboxClaim (its replica died), and Close gives it
// up at once.
func TestPostgresOutboxClaim(t *testing.T) {
	db := pgtest.NewDatabase(t)
	a, b := openPostgres(t, db.URL), openPostgres(t, db.URL)
	update(t, a, func(tx Tx) error {
		return tx.AppendOutbox(&storagev1.GroupOutboxRecord{AppId: testApp, EventId: "ev1"})
	})
	if recs, err := a.ClaimOutbox(10); err != nil || len(recs) != 1 {
		t.Fatalf("the first claim: %v, %v", recs, err)
	}
	if recs, err := b.ClaimOutbox(10); err != nil || len(recs) != 0 {
		t.Fatalf("another replica's claim while the first holds it: %v, %v; want none", recs, err)
	}
	if recs, err := a.ClaimOutbox(10); err != nil || len(recs) != 1 {
		t.Fatalf("the holder again: %v, %v", recs, err)
	}
	// The holder dies: its claim lapses.
	conn := db.ConnIn(t, Schema)
	if _, err := conn.Exec(context.Background(), "UPDATE outbox_claim SET until = now() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	if recs, err := b.ClaimOutbox(10); err != nil || len(recs) != 1 {
		t.Fatalf("after the claim lapsed: %v, %v", recs, err)
	}
	if recs, _ := a.ClaimOutbox(10); len(recs) != 0 {
		t.Errorf("the first replica, whose claim lapsed, got %d records", len(recs))
	}
	b.Close()
	if recs, err := a.ClaimOutbox(10); err != nil || len(recs) != 1 {
		t.Fatalf("after the holder closed: %v, %v", recs, err)
	}
	// Emptied, the outbox is free for whoever comes.
	update(t, a, func(tx Tx) error { return tx.DeleteOutbox(1) })
	if recs, err := a.ClaimOutbox(10); err != nil || len(recs) != 0 {
		t.Fatalf("the empty outbox: %v, %v", recs, err)
	}
	var holder *string
	if err := conn.QueryRow(context.Background(), "SELECT holder FROM outbox_claim").Scan(&holder); err != nil || holder != nil {
		t.Errorf("the claim on an empty outbox: %v, %v; want none", holder, err)
	}
}

// TestPostgresDamagedRecord: a row whose record does not parse is reported damaged,
// naming the table and the key for the log.
func TestPostgresDamagedRecord(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := openPostgres(t, db.URL)
	update(t, s, func(tx Tx) error {
		if err := tx.PutGroup(&storagev1.GroupRecord{AppId: testApp, GroupId: testGroupA}); err != nil {
			return err
		}
		return tx.PutMember(testApp, testGroupA, &storagev1.GroupMemberRecord{Identity: testUser1})
	})
	db.Exec(t, "UPDATE "+Schema+".members SET record = '\\xffffffff'")
	for name, run := range map[string]func(func(Tx) error) error{"View": s.View, "Update": s.Update} {
		err := run(func(tx Tx) error {
			_, err := tx.Member(testApp, testGroupA, testUser1)
			return err
		})
		if !errors.Is(err, errs.ErrDamaged) || !strings.Contains(err.Error(), "umbra_group.members") || !strings.Contains(err.Error(), testUser1) {
			t.Errorf("%s of a damaged member: %v; want ErrDamaged naming the table and key", name, err)
		}
	}
}

// TestPostgresKeysStartWithTheirDistributionColumns: every table kept per group has a
// primary key that starts with (app_id, group_id) (docs/scaling.md).
func TestPostgresKeysStartWithTheirDistributionColumns(t *testing.T) {
	db := pgtest.NewDatabase(t)
	openPostgres(t, db.URL)
	conn := db.ConnIn(t, Schema)
	rows, err := conn.Query(context.Background(), `
		SELECT c.relname, array_agg(a.attname::text ORDER BY k.n)
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indrelid
		JOIN pg_namespace ns ON ns.oid = c.relnamespace
		CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
		WHERE ns.nspname = $1 AND i.indisprimary
		GROUP BY c.relname`, Schema)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	for rows.Next() {
		var table string
		var cols []string
		if err := rows.Scan(&table, &cols); err != nil {
			t.Fatal(err)
		}
		keys[table] = cols
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"groups", "members", "bans", "join_requests", "invitations", "epochs", "statements", "epoch_keys", "uploads", "rotation_due"} {
		if k := keys[table]; len(k) < 2 || k[0] != "app_id" || k[1] != "group_id" {
			t.Errorf("table %s has primary key %v; want it to start with (app_id, group_id)", table, k)
		}
	}
	if k := keys["upload_keys"]; len(k) == 0 || k[0] != "upload_id" {
		t.Errorf("upload_keys has primary key %v; want it to start with upload_id", k)
	}
}
