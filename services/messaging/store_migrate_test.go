package messaging

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/internal/storecopy/copytest"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/messaging/internal/msgstore"
)

var (
	mgAlice, mgBob, mgCarol = cfID(1), cfID(2), cfID(3)
	mgMembers               = []string{mgAlice, mgBob, mgCarol}
)

// fillBolt writes every record kind of messaging.db through the Store, in batches over
// two hours (so over more than one time partition), and closes it cleanly.
func fillBolt(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "messaging.db")
	s, err := OpenBoltStore(path, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		at := cfT0.Add(time.Duration(i) * 20 * time.Minute)
		ops := []*Op{
			cfSend(mgAlice, mgBob, fmt.Sprint("a", i), fmt.Sprint("hello bob ", i)),
			cfSend(mgBob, mgAlice, fmt.Sprint("b\x00", i), fmt.Sprint("hello alice ", i)), // a client_message_id with a zero byte
			cfGroupSend("g_1", mgCarol, mgMembers, uint64(1+i/3), fmt.Sprint("c", i), fmt.Sprint("hello group ", i)),
			cfEvent(fmt.Sprint("ev\x00", i), fmt.Sprint("payload ", i), mgAlice, mgCarol),
		}
		if i > 0 {
			ops = append(ops, cfCursor(mgBob, mgAlice, uint64(i), uint64(i)))
		}
		cfApply(t, s, at, ops...)
		wantOK(t, ops...)
	}
	if err := s.PutAppSettings(&messagingstoragev1.MessagingAppSettingsRecord{AppId: cfApp, AllowPlaintextDirect: true, UpdatedAt: timestamppb.New(cfT0)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// readAll is what the service reads of the store.
func readAll(t *testing.T, s Store) string {
	t.Helper()
	var out strings.Builder
	p := func(v ...any) { fmt.Fprintln(&out, v...) }
	// The bbolt engine gives a record with its small fan-out inline, PostgreSQL without.
	bare := func(r *messagingstoragev1.MessagingLogRecord) *messagingstoragev1.MessagingLogRecord {
		if r == nil {
			return nil
		}
		r = proto.Clone(r).(*messagingstoragev1.MessagingLogRecord)
		r.Fanout = nil
		return r
	}
	for _, conv := range []string{cfDirect(mgAlice, mgBob), "g_1"} {
		p(s.Conversation(cfApp, conv))
		recs, more, err := s.Messages(cfApp, conv, MessageQuery{Forward: true, Limit: 1000, MaxBytes: 1 << 30})
		for _, r := range recs {
			p(bare(r))
		}
		p(more, err)
	}
	for _, id := range mgMembers {
		items, head, err := s.Inbox(cfApp, id, 0, 1000, 1<<30)
		for _, it := range items {
			p(it.Sequence, bare(it.Record))
		}
		p(head, err)
		p(s.InboxHead(cfApp, id))
		p(s.Participations(cfApp, id, "", 100))
	}
	sent, err := s.Sent(cfApp, mgBob, "b\x003")
	p(bare(sent), err)
	p(s.AppSettings(cfApp))
	return out.String()
}

func TestCopyBoltToPostgres(t *testing.T) {
	path := fillBolt(t)
	pg := openPostgres(t, pgtest.NewDatabase(t).URL)
	res := copytest.Copy(t, BoltCopier(pg), path)
	for _, kind := range msgstore.CopyKinds {
		if res.Source[kind].Count == 0 {
			t.Errorf("no %s copied", kind)
		}
	}
	if got, want := res.Source["messages"].Count, 18; got != want {
		t.Errorf("%d messages copied, want %d", got, want)
	}
	src := openBolt(t, path)
	want, got := readAll(t, src), readAll(t, pg)
	src.Close()
	if got != want {
		g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
		for i := range min(len(g), len(w)) {
			if g[i] != w[i] {
				t.Fatalf("line %d: the copy reads\n%s\nthe file read\n%s", i, g[i], w[i])
			}
		}
		t.Fatalf("the copy reads %d lines, the file %d", len(g), len(w))
	}

	// The service goes on over the copy: sequences without a gap, a retry still a
	// duplicate, an event id still known, inbox sequences after the heads.
	next, retry := cfSend(mgAlice, mgBob, "new", "after the move"), cfSend(mgAlice, mgBob, "a2", "hello bob 2")
	group := cfGroupSend("g_1", mgAlice, mgMembers, 2, "c-new", "group after the move")
	again, ev := cfEvent("ev\x001", "payload 1", mgAlice, mgCarol), cfEvent("ev-new", "new", mgAlice)
	cfApply(t, pg, cfT0.Add(2*time.Hour), next, retry, group, again, ev)
	wantOK(t, next, retry, group, again, ev)
	if next.Send.Sequence != 13 || next.Send.Duplicate || !retry.Send.Duplicate || retry.Send.Sequence != 5 || group.Send.Sequence != 7 {
		t.Errorf("after the copy: new message %d (dup %v), retry %d (dup %v), group %d", next.Send.Sequence, next.Send.Duplicate,
			retry.Send.Sequence, retry.Send.Duplicate, group.Send.Sequence)
	}
	if !again.Event.Duplicate || ev.Event.Duplicate {
		t.Errorf("an event id of the file: duplicate %v; a new one: %v", again.Event.Duplicate, ev.Event.Duplicate)
	}
	if seqs := inboxSeqs(t, pg, mgAlice); len(seqs) != 6*4+3 || seqs[len(seqs)-1] != uint64(len(seqs)) {
		t.Errorf("alice's inbox after the copy: %v", seqs)
	}

	// Copying again over the changed schema is refused, naming what differs.
	_, err := BoltCopier(pg).Copy(context.Background(), path)
	copytest.WantDifferences(t, "copy over a changed schema", err, "messages", "inbox", "idempotency", "event_ids", "conversations", "inbox_heads")
}

func TestCopyInterruptedThenRerun(t *testing.T) {
	path := fillBolt(t)
	db := pgtest.NewDatabase(t)
	pg := openPostgres(t, db.URL)
	copytest.InterruptedThenRerun(t, db, BoltCopier(pg), path, "umbra_messaging.messages")
	// An inbox item pointed elsewhere behind the copy's back.
	db.Exec(t, "UPDATE umbra_messaging.inbox SET sequence = sequence + 1 WHERE identity = $1 AND inbox_sequence = 1", mgAlice)
	_, err := BoltCopier(pg).Verify(context.Background(), path)
	copytest.WantDifferences(t, "verify a changed inbox item", err, "inbox")
}

// A file whose indexes lag its log (its process did not close it) is refused, naming
// what to do, and nothing is written.
func TestCopyRefusesAFileNotClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "messaging.db")
	s, err := OpenBoltStore(path, StoreOptions{FlushEntries: 1 << 20, FlushAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	op := cfSend(mgAlice, mgBob, "k", "body")
	cfApply(t, s, cfT0, op)
	wantOK(t, op)
	// The file as a crash leaves it: the log committed, the indexes still in memory.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(t.TempDir(), "messaging.db")
	if err := os.WriteFile(crashed, b, 0o600); err != nil {
		t.Fatal(err)
	}
	db := pgtest.NewDatabase(t)
	pg := openPostgres(t, db.URL)
	if _, err := BoltCopier(pg).Copy(context.Background(), crashed); err == nil || !strings.Contains(err.Error(), "was not closed cleanly") {
		t.Fatalf("copy of a file not closed: %v", err)
	}
	if got := pgtest.Query[int64](t, db, "SELECT count(*) FROM umbra_messaging.conversations"); got[0] != 0 {
		t.Errorf("%d conversations written", got[0])
	}
}

// BenchmarkCopyBoltToPostgres copies a messaging.db of 20,000 direct messages between
// 100 pairs (and their 40,000 inbox items), verified; reported per message.
func BenchmarkCopyBoltToPostgres(b *testing.B) {
	const pairs, perPair = 100, 200
	path := filepath.Join(b.TempDir(), "messaging.db")
	s, err := OpenBoltStore(path, StoreOptions{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	body := strings.Repeat("x", 200)
	for i := range perPair {
		var ops []*Op
		for p := range pairs {
			ops = append(ops, cfSend(cfID(2*p), cfID(2*p+1), fmt.Sprint(i), body))
		}
		if err := s.Apply(&Batch{Now: cfT0.Add(time.Duration(i) * time.Second), Retention: 24 * time.Hour, Ops: ops}); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		db := pgtest.NewDatabase(b)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		pg, err := OpenPostgresStore(ctx, db.URL, PostgresOptions{}, zap.NewNop())
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := BoltCopier(pg).Copy(context.Background(), path); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		pg.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*pairs*perPair), "ns/message")
}

// A file whose oldest entries the sweeper deleted copies as it reads: heads and latest
// sequences stay where they were, the entries swept are not there.
func TestCopyAfterSweep(t *testing.T) {
	path := fillBolt(t)
	s, err := OpenBoltStore(path, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n, _, err := s.Sweep(cfT0.Add(90*time.Minute), 1000)
	if err != nil || n == 0 {
		t.Fatalf("swept %d: %v", n, err)
	}
	want := readAll(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db := pgtest.NewDatabase(t)
	pg := openPostgres(t, db.URL)
	if _, err := BoltCopier(pg).Copy(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, pg); got != want {
		t.Errorf("after a sweep, the copy reads\n%s\nthe file read\n%s", got, want)
	}
	next := cfSend(mgAlice, mgBob, "new", "after the move")
	cfApply(t, pg, cfT0.Add(2*time.Hour), next)
	wantOK(t, next)
	if next.Send.Sequence != 13 {
		t.Errorf("the next message after a sweep and a copy has sequence %d, want 13", next.Send.Sequence)
	}
}
