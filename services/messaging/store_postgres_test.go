package messaging

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/internal/storetest"
	"github.com/umbra-e2ee/umbra/pkg/errs"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testPartitionWidth is the partitions' width in the tests: an hour, as the suite's
// retention.
const testPartitionWidth = time.Hour

func openPostgres(t testing.TB, url string) *PostgresStore {
	t.Helper()
	return pgtest.OpenStore(t, 60*time.Second, func(ctx context.Context, log *zap.Logger) (*PostgresStore, error) {
		return OpenPostgresStore(ctx, url, PostgresOptions{PartitionWidth: testPartitionWidth}, log)
	})
}

// postgresEngine is the PostgreSQL engine for the conformance suite: a database of the
// test's own, and for replicas a store (a pool) each over it, as replicas in several
// processes have.
var postgresEngine = storeEngine{
	Engine: storetest.Database[Store](pgtest.NewURL, openPostgres),
	poison: func(t *testing.T) (Store, *Op) {
		db := pgtest.NewDatabase(t)
		s := openPostgres(t, db.URL)
		// A constraint the database enforces, as it would a full disk: the batch that
		// gives u_poison an inbox fails.
		db.Exec(t, "ALTER TABLE "+Schema+".inbox_heads ADD CONSTRAINT poison CHECK (identity <> 'u_poison')")
		return s, &Op{Event: &EventOp{AppID: cfApp, EventID: "poison", Type: "t.T", Recipients: []string{"u_poison"}}}
	},
}

func TestPostgresStore(t *testing.T) { testStore(t, postgresEngine) }

// partitionTables returns the partitions of the messages table, by name.
func partitionTables(t *testing.T, url string) []string {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, _ := conn.Query(context.Background(), `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = '`+Schema+`.messages'::regclass ORDER BY 1`)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func countRows(t *testing.T, url, table string) int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+Schema+"."+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPostgresPartitions: retention drops a partition once all of it has expired,
// and not before; the rows of a partition not yet droppable are gone for readers
// from the sweep on; the partitions of the next retention period are made ahead.
func TestPostgresPartitions(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := openPostgres(t, db.URL)
	t0 := time.Date(2026, 11, 1, 12, 30, 0, 0, time.UTC)
	alice, bob := cfID(1), cfID(2)
	conv := cfDirect(alice, bob)
	cfApply(t, s, t0, cfSend(alice, bob, "m1", "one"), cfEvent("e1", "p", alice)) // expire 13:30, partition 13:00
	cfApply(t, s, t0.Add(2*time.Hour), cfSend(alice, bob, "m2", "two"))           // expires 15:30, partition 15:00
	first, second := "messages_20261101t130000", "messages_20261101t150000"
	if got := partitionTables(t, db.URL); !slices.Contains(got, first) || !slices.Contains(got, second) {
		t.Fatalf("partitions %v, want %s and %s among them", got, first, second)
	}
	// 14:00: the first batch has expired, its partition (13:00 to 14:00) not wholly.
	if _, _, err := s.Sweep(time.Date(2026, 11, 1, 13, 59, 59, 0, time.UTC), 100); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(partitionTables(t, db.URL), first) || countRows(t, db.URL, first) != 1 {
		t.Fatalf("the partition of 13:00 was dropped, or its row deleted, before all of it expired")
	}
	if got := messageSeqs(t, s, conv); !slices.Equal(got, []uint64{2}) {
		t.Errorf("messages %v, want [2]: the first has expired", got)
	}
	if got := inboxSeqs(t, s, alice); !slices.Equal(got, []uint64{3}) {
		t.Errorf("alice's inbox %v, want [3]", got)
	}
	// 14:00 exactly: all of it has.
	if _, _, err := s.Sweep(time.Date(2026, 11, 1, 14, 0, 0, 0, time.UTC), 100); err != nil {
		t.Fatal(err)
	}
	got := partitionTables(t, db.URL)
	if slices.Contains(got, first) || !slices.Contains(got, second) {
		t.Errorf("partitions after the sweep at 14:00: %v; want %s dropped and %s kept", got, first, second)
	}
	for _, table := range []string{"events_20261101t130000", "inbox_20261101t130000"} {
		var exists bool
		if err := s.DB().Pool.QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL", Schema+"."+table).Scan(&exists); err != nil || exists {
			t.Errorf("%s after the sweep: exists %v (%v)", table, exists, err)
		}
	}
	if countRows(t, db.URL, "messages") != 1 || countRows(t, db.URL, "inbox") != 2 {
		t.Errorf("rows left: %d messages, %d inbox items; want the second message's", countRows(t, db.URL, "messages"), countRows(t, db.URL, "inbox"))
	}
	// Made ahead: the sweep knows the retention (an hour) from the batches.
	for _, want := range []string{"messages_20261101t140000", "messages_20261101t150000", "messages_20261101t160000"} {
		if !slices.Contains(partitionTables(t, db.URL), want) {
			t.Errorf("partition %s not made ahead: %v", want, partitionTables(t, db.URL))
		}
	}
	if got := messageSeqs(t, s, conv); !slices.Equal(got, []uint64{2}) {
		t.Errorf("messages after the drop %v, want [2]", got)
	}
}

// TestPostgresReplicasMakePartitionsTogether: replicas that need the same new
// partitions at once make each once (under the advisory lock), and neither fails.
func TestPostgresReplicasMakePartitionsTogether(t *testing.T) {
	db := pgtest.NewDatabase(t)
	stores := []*PostgresStore{openPostgres(t, db.URL), openPostgres(t, db.URL)}
	t0 := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	for h := range 12 {
		now := t0.Add(time.Duration(h) * time.Hour)
		var wg sync.WaitGroup
		for r, s := range stores {
			wg.Go(func() {
				op := cfSend(cfID(r), cfID(10), fmt.Sprint("m", h), "x")
				if err := s.Apply(&Batch{Now: now, Retention: time.Hour, Ops: []*Op{op}}); err != nil || op.Err != nil {
					t.Errorf("hour %d, replica %d: %v %v", h, r, err, op.Err)
				}
			})
		}
		wg.Wait()
	}
}

// TestPostgresUserWithoutPartitionRights: a database user that could not make or drop
// the partitions is refused at start, with what to grant.
func TestPostgresUserWithoutPartitionRights(t *testing.T) {
	db := pgtest.NewDatabase(t)
	openPostgres(t, db.URL).Close() // migrated by the owner
	role := fmt.Sprintf("msg_svc_%d", time.Now().UnixNano())
	db.Exec(t, "CREATE ROLE "+role+" LOGIN PASSWORD 'pw'")
	db.Exec(t, "GRANT USAGE ON SCHEMA "+Schema+" TO "+role)
	db.Exec(t, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "+Schema+" TO "+role)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := OpenPostgresStore(ctx, db.URLAs(role, "pw"), PostgresOptions{}, zaptest.NewLogger(t))
	if err == nil || !strings.Contains(err.Error(), "cannot make and drop the time partitions") || !strings.Contains(err.Error(), "GRANT postgres TO "+role) {
		t.Fatalf("open as a user with table rights only: %v", err)
	}
	db.Exec(t, "GRANT CREATE ON SCHEMA "+Schema+" TO "+role)
	db.Exec(t, "GRANT postgres TO "+role)
	s, err := OpenPostgresStore(ctx, db.URLAs(role, "pw"), PostgresOptions{}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("open with the rights granted: %v", err)
	}
	s.Close()
}

// TestPostgresSendWaitsForTheConversationLock: a batch numbers a conversation's
// messages only once it holds the conversation's row: while another transaction holds
// it, the batch waits, and then numbers after what that one committed.
func TestPostgresSendWaitsForTheConversationLock(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := openPostgres(t, db.URL)
	alice, bob := cfID(1), cfID(2)
	cfApply(t, s, cfT0, cfSend(alice, bob, "m1", "one"))
	ctx := context.Background()
	conn := db.Conn(t)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1 FROM "+Schema+".conversations WHERE conversation_id = $1 FOR UPDATE", cfDirect(alice, bob)); err != nil {
		t.Fatal(err)
	}
	done := make(chan *Op, 1)
	go func() {
		op := cfSend(bob, alice, "m2", "two")
		if err := s.Apply(&Batch{Now: cfT0, Retention: time.Hour, Ops: []*Op{op}}); err != nil {
			t.Error(err)
		}
		done <- op
	}()
	select {
	case op := <-done:
		t.Fatalf("a batch stored a message (%+v) while another transaction held its conversation", op.Send)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if op := <-done; op.Err != nil || op.Send.Sequence != 2 {
		t.Errorf("the waiting batch: %v, sequence %d; want 2", op.Err, op.Send.Sequence)
	}
}

// TestPostgresDamagedRecord: a row whose record does not parse is reported damaged,
// naming the table and the key, and is not served; an op that reads it is refused
// alone, and the rest of its batch is stored.
func TestPostgresDamagedRecord(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := openPostgres(t, db.URL)
	alice, bob, carol := cfID(1), cfID(2), cfID(3)
	cfApply(t, s, cfT0, cfSend(alice, bob, "m1", "one"), cfSend(alice, carol, "m2", "two"))
	db.Exec(t, "UPDATE "+Schema+".messages SET record = '\\xffffffff' WHERE conversation_id = $1", cfDirect(alice, bob))
	db.Exec(t, "UPDATE "+Schema+".conversations SET record = '\\xffffffff' WHERE conversation_id = $1", cfDirect(alice, bob))
	if _, _, err := s.Messages(cfApp, cfDirect(alice, bob), MessageQuery{Forward: true, Limit: 10, MaxBytes: 1 << 20}); !errors.Is(err, errs.ErrDamaged) || !strings.Contains(err.Error(), "messages") {
		t.Errorf("Messages over a damaged row: %v, want ErrDamaged naming the table", err)
	}
	if _, _, err := s.Inbox(cfApp, bob, 0, 10, 1<<20); !errors.Is(err, errs.ErrDamaged) {
		t.Errorf("Inbox over a damaged row: %v, want ErrDamaged", err)
	}
	if _, err := s.Conversation(cfApp, cfDirect(alice, bob)); !errors.Is(err, errs.ErrDamaged) || !strings.Contains(err.Error(), "conversations") {
		t.Errorf("Conversation of a damaged row: %v", err)
	}
	bad, good := cfSend(bob, alice, "m3", "three"), cfSend(carol, alice, "m4", "four")
	cfApply(t, s, cfT0, bad, good)
	if !errors.Is(bad.Err, errs.ErrDamaged) || good.Err != nil || good.Send.Sequence != 2 {
		t.Errorf("a batch over a damaged conversation: %v; the other op %v, sequence %d", bad.Err, good.Err, good.Send.Sequence)
	}
}

// TestPostgresSchema: the tables are in the messaging service's own schema.
func TestPostgresSchema(t *testing.T) {
	pgtest.WantTables(t, openPostgres, "[umbra_messaging.app_settings umbra_messaging.conversations umbra_messaging.event_ids umbra_messaging.events umbra_messaging.goose_db_version umbra_messaging.idempotency umbra_messaging.inbox umbra_messaging.inbox_heads umbra_messaging.messages umbra_messaging.participations umbra_messaging.partitions umbra_messaging.sweep_state]")
}

// watcher runs s.Watch for the inboxes of ids until the test ends, and returns what it
// reports.
func watcher(t *testing.T, s *PostgresStore, ids ...string) <-chan InboxHead {
	t.Helper()
	out := make(chan InboxHead, 100)
	var mu sync.Mutex
	known := map[string]uint64{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Watch(ctx, func() []InboxHead {
			mu.Lock()
			defer mu.Unlock()
			var hs []InboxHead
			for _, id := range ids {
				hs = append(hs, InboxHead{AppID: cfApp, Identity: id, Head: known[id]})
			}
			return hs
		}, func(hs []InboxHead) {
			mu.Lock()
			defer mu.Unlock()
			for _, h := range hs {
				if h.AppID == cfApp && slices.Contains(ids, h.Identity) && h.Head > known[h.Identity] {
					known[h.Identity] = h.Head
					out <- h
				}
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return out
}

// wantWoken waits for a report that identity's inbox reached head.
func wantWoken(t *testing.T, ch <-chan InboxHead, identity string, head uint64, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case h := <-ch:
			if h.Identity == identity && h.Head >= head {
				return
			}
		case <-deadline:
			t.Fatalf("no report of %s's inbox at %d within %v", identity, head, within)
		}
	}
}

func openPostgresPoll(t *testing.T, url string, poll time.Duration) *PostgresStore {
	t.Helper()
	s, err := OpenPostgresStore(context.Background(), url, PostgresOptions{PartitionWidth: testPartitionWidth, WatchPoll: poll}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestPostgresWatch: a replica learns at once, by a notification, of the inboxes that
// another replica's batches made grow; of a change whose wake-up was lost, by its poll;
// and after its listening connection broke, it listens again by itself.
func TestPostgresWatch(t *testing.T) {
	db := pgtest.NewDatabase(t)
	alice, bob := cfID(1), cfID(2)
	sender := openPostgres(t, db.URL)
	// Polls an hour apart: only a notification reports within seconds.
	notified := openPostgresPoll(t, db.URL, time.Hour)
	woken := watcher(t, notified, bob)
	waitListening(t, notified, 1)
	cfApply(t, sender, time.Now(), cfSend(alice, bob, "m1", "one"))
	wantWoken(t, woken, bob, 1, 5*time.Second)

	t.Run("a lost wake-up only delays", func(t *testing.T) {
		polled := openPostgresPoll(t, db.URL, 200*time.Millisecond)
		woken := watcher(t, polled, bob)
		waitListening(t, polled, 1)
		wantWoken(t, woken, bob, 1, 5*time.Second) // the first read, when it starts listening
		// A change made without a notification, as one lost on its way.
		db.Exec(t, "UPDATE "+Schema+".inbox_heads SET head = 7 WHERE identity = $1", bob)
		wantWoken(t, woken, bob, 7, 5*time.Second)
	})

	t.Run("the listening connection breaks", func(t *testing.T) {
		db.Exec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND datname = current_database()")
		waitListening(t, notified, 2)
		cfApply(t, sender, time.Now(), cfSend(alice, bob, "m2", "two"))
		wantWoken(t, woken, bob, 8, 5*time.Second)
	})
}

// waitListening waits until s has started listening n times.
func waitListening(t *testing.T, s *PostgresStore, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.listening.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the store started listening %d times in 10 s, want %d", s.listening.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
