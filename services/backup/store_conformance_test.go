package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/outbox"
	"github.com/umbra-e2ee/umbra/internal/storetest"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	backupstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/backup/v1"
)

// The conformance suite: every behaviour of Store that the service relies on, run with
// the same code over each engine (TestBoltStore, TestPostgresStore), as SpiceDB runs
// one datastore suite over each of its datastores.

// storeEngine opens stores of one engine for the suite.
type storeEngine = storetest.Engine[Store]

func testStore(t *testing.T, e storeEngine) {
	storetest.Run(t, e, []storetest.Case[storeEngine]{
		{"FreshSlot", testFreshSlot},
		{"UpdateSlot", testUpdateSlot},
		{"UpdateWithoutWriteLeavesNoSlot", testUpdateWithoutWrite},
		{"UpdateMayNotMoveTheRecord", testUpdateMayNotMove},
		{"Slots", testSlots},
		{"RecordsRoundTrip", testRecordsRoundTrip},
		{"SecretCheck", testSecretCheck},
		{"OutboxClaims", testOutboxClaims},
		{"OutboxHandover", testOutboxHandover},
		{"ConcurrentGuessesSpendTheBudgetOnce", testConcurrentGuesses},
		{"ConcurrentPutsOneWinsEachVersion", testConcurrentPuts},
		{"ConcurrentSecretChecks", testConcurrentSecretChecks},
		{"ConcurrentOutboxDeliveryOnce", testConcurrentDelivery},
	})
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// bump is an update that writes the next version of a slot and queues an event when
// event is set.
func bump(event bool) SlotUpdate {
	return func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
		r.LatestVersion++
		c := Change{Write: true}
		if event {
			c.Event = &backupstoragev1.BackupOutboxRecord{AppId: r.GetAppId(), Identity: r.GetIdentity(), EventId: fmt.Sprintf("e/%s/%d/%d", r.GetIdentity(), r.GetSlot(), r.GetLatestVersion())}
		}
		return c, nil
	}
}

func mustUpdate(t *testing.T, s Store, app, identity string, slot uint32, update SlotUpdate) *backupstoragev1.BackupSlotRecord {
	t.Helper()
	rec, err := s.UpdateSlot(app, identity, slot, update)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func testFreshSlot(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	rec, err := s.Slot("app_a", "u_a", 1)
	if err != nil || rec.GetAppId() != "app_a" || rec.GetIdentity() != "u_a" || rec.GetSlot() != 1 || rec.GetLatestVersion() != 0 || rec.GetBackup() != nil {
		t.Fatalf("a fresh slot: %v, %v", rec, err)
	}
	if recs, err := s.Slots("app_a", "u_a"); err != nil || len(recs) != 0 {
		t.Errorf("Slots after reading a fresh slot: %v, %v; want none", recs, err)
	}
	if recs, err := s.Outbox(10); err != nil || len(recs) != 0 {
		t.Errorf("Outbox of a new store: %v, %v", recs, err)
	}
}

// testUpdateSlot: an update's change and its answer both apply; an answer without a
// change writes nothing; events get increasing sequences in the outbox, which keeps
// them until deleted, across a reopen.
func testUpdateSlot(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	refusal := errs.Permissionf("refused")
	for i := range 3 {
		out, err := s.UpdateSlot("app_a", "u_a", 1, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
			r.LatestVersion++
			return Change{Write: true, Event: &backupstoragev1.BackupOutboxRecord{AppId: "app_a", Identity: "u_a", EventId: fmt.Sprint("e", i)}}, refusal
		})
		if !errors.Is(err, refusal) || out.GetLatestVersion() != uint64(i+1) {
			t.Fatalf("update %d: %v, %v", i, out, err)
		}
	}
	// A refusal without a change writes nothing, whatever it did to the record, and
	// still answers with the record as the update left it.
	out, err := s.UpdateSlot("app_a", "u_a", 1, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
		r.LatestVersion = 99
		return Change{}, errs.Conflictf("no")
	})
	if !errors.Is(err, errs.ErrConflict) || out.GetLatestVersion() != 99 {
		t.Fatalf("a refusal without a change: %v, %v", out, err)
	}
	if rec, _ := s.Slot("app_a", "u_a", 1); rec.GetLatestVersion() != 3 {
		t.Fatalf("latest version %d, want 3", rec.GetLatestVersion())
	}
	// Neither an answer of nil nor a change of nothing writes.
	if _, err := s.UpdateSlot("app_a", "u_a", 1, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
		r.RemainingAttempts = 7
		return Change{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if rec, _ := s.Slot("app_a", "u_a", 1); rec.GetRemainingAttempts() != 0 {
		t.Fatalf("an update without a change wrote %v", rec)
	}
	events, err := s.Outbox(10)
	if err != nil || len(events) != 3 {
		t.Fatalf("outbox %v, %v", events, err)
	}
	for i, ev := range events {
		if ev.GetEventId() != fmt.Sprint("e", i) || (i > 0 && ev.GetSequence() <= events[i-1].GetSequence()) {
			t.Errorf("event %d: %v; want e%d, sequences increasing", i, ev, i)
		}
	}
	if got, _ := s.Outbox(2); len(got) != 2 {
		t.Errorf("Outbox(2) gave %d", len(got))
	}
	if err := s.DeleteOutbox(events[1].GetSequence()); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteOutbox(events[1].GetSequence()); err != nil {
		t.Fatalf("deleting a deleted event: %v", err)
	}
	s = reopen(t)
	got, err := s.Outbox(10)
	if err != nil || len(got) != 2 || !proto.Equal(got[0], events[0]) || !proto.Equal(got[1], events[2]) {
		t.Fatalf("after a delete and a reopen: %v, %v", got, err)
	}
	if rec, _ := s.Slot("app_a", "u_a", 1); rec.GetLatestVersion() != 3 {
		t.Fatalf("after a reopen, latest version %d, want 3", rec.GetLatestVersion())
	}
	// A later event's sequence is past every earlier one's, deleted ones included.
	mustUpdate(t, s, "app_a", "u_a", 2, bump(true))
	if got, _ := s.Outbox(10); len(got) != 3 || got[2].GetSequence() <= events[2].GetSequence() {
		t.Fatalf("a new event after a reopen: %v", got)
	}
}

// testUpdateWithoutWrite: an update of a slot never written that writes nothing
// leaves it unwritten (Slots does not list it); one that only queues an event queues
// it and still leaves the slot unwritten.
func testUpdateWithoutWrite(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	_, err := s.UpdateSlot("app_a", "u_a", 1, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
		return Change{}, errs.NotFoundf("no backup")
	})
	if !errors.Is(err, errs.ErrNotFound) {
		t.Fatal(err)
	}
	rec, err := s.UpdateSlot("app_a", "u_a", 2, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
		return Change{Event: &backupstoragev1.BackupOutboxRecord{AppId: "app_a", Identity: "u_a", EventId: "only"}}, nil
	})
	if err != nil || rec.GetSlot() != 2 {
		t.Fatalf("an event without a write: %v, %v", rec, err)
	}
	if recs, err := s.Slots("app_a", "u_a"); err != nil || len(recs) != 0 {
		t.Errorf("Slots after updates that wrote no slot: %v, %v; want none", recs, err)
	}
	if evs, err := s.Outbox(10); err != nil || len(evs) != 1 || evs[0].GetEventId() != "only" {
		t.Errorf("outbox %v, %v; want the one event", evs, err)
	}
}

// testUpdateMayNotMove: an update that renames its record is refused whole.
func testUpdateMayNotMove(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	mustUpdate(t, s, "app_a", "u_a", 1, bump(false))
	_, err := s.UpdateSlot("app_a", "u_a", 1, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
		r.Identity = "u_b"
		r.LatestVersion = 50
		return Change{Write: true, Event: &backupstoragev1.BackupOutboxRecord{EventId: "x"}}, nil
	})
	if err == nil {
		t.Fatal("an update that moved the record to another identity was accepted")
	}
	if rec, _ := s.Slot("app_a", "u_a", 1); rec.GetLatestVersion() != 1 {
		t.Errorf("the refused update wrote %v", rec)
	}
	if recs, _ := s.Slots("app_a", "u_b"); len(recs) != 0 {
		t.Errorf("the refused update wrote u_b's slots %v", recs)
	}
	if evs, _ := s.Outbox(10); len(evs) != 0 {
		t.Errorf("the refused update queued %v", evs)
	}
}

// testSlots: an identity's slots, in order, and nobody else's: not another identity's,
// not another app's, not one whose id starts with this one's.
func testSlots(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	for _, w := range []struct {
		app, identity string
		slot          uint32
	}{{"app_a", "u_a", 2}, {"app_a", "u_a", 1}, {"app_a", "u_ab", 1}, {"app_a", "u_", 1}, {"app_b", "u_a", 1}, {"app_", "au_a", 1}} {
		mustUpdate(t, s, w.app, w.identity, w.slot, bump(false))
	}
	got, err := s.Slots("app_a", "u_a")
	if err != nil || len(got) != 2 || got[0].GetSlot() != 1 || got[1].GetSlot() != 2 {
		t.Fatalf("slots %v, %v", got, err)
	}
	for _, r := range got {
		if r.GetAppId() != "app_a" || r.GetIdentity() != "u_a" {
			t.Errorf("someone else's slot %v", r)
		}
	}
	if got, _ := s.Slots("app_c", "u_a"); len(got) != 0 {
		t.Errorf("another app's identity has slots %v", got)
	}
}

// testRecordsRoundTrip: what is stored is read back exactly, nanoseconds included,
// after a reopen too.
func testRecordsRoundTrip(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	at := time.Date(2026, 11, 1, 12, 0, 0, 123456789, time.UTC)
	want := &backupstoragev1.BackupSlotRecord{
		AppId: "app_é", Identity: "u_\u2603", Slot: 2, LatestVersion: 7, RemainingAttempts: 9, UnspentEvaluations: 1,
		Backup: &backupstoragev1.BackupStoredRecord{
			Version: 7, Ciphertext: []byte{0, 1, 2, 255}, Nonce: bytes.Repeat([]byte{9}, 12), Aead: 2, AuthKeyHash: bytes.Repeat([]byte{0xab}, 32),
			Argon2IdTime: 3, Argon2IdMemoryKib: 65536, Argon2IdThreads: 4, Argon2IdSalt: []byte("0123456789abcdef"), StoredAt: timestamppb.New(at),
		},
	}
	event := &backupstoragev1.BackupOutboxRecord{AppId: "app_é", Identity: "u_\u2603", EventId: "ev", Type: "t", Payload: []byte{0, 0xff}, CreatedAt: timestamppb.New(at)}
	mustUpdate(t, s, "app_é", "u_\u2603", 2, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
		proto.Reset(r)
		proto.Merge(r, want)
		return Change{Write: true, Event: proto.Clone(event).(*backupstoragev1.BackupOutboxRecord)}, nil
	})
	for pass := range 2 {
		if pass == 1 {
			s = reopen(t)
		}
		if got, err := s.Slot("app_é", "u_\u2603", 2); err != nil || !proto.Equal(got, want) || !got.GetBackup().GetStoredAt().AsTime().Equal(at) {
			t.Errorf("Slot = %v (%v), want %v", got, err, want)
		}
		if got, err := s.Slots("app_é", "u_\u2603"); err != nil || len(got) != 1 || !proto.Equal(got[0], want) {
			t.Errorf("Slots = %v (%v)", got, err)
		}
		evs, err := s.Outbox(1)
		if err != nil || len(evs) != 1 {
			t.Fatalf("Outbox = %v (%v)", evs, err)
		}
		event.Sequence = evs[0].GetSequence()
		if !proto.Equal(evs[0], event) {
			t.Errorf("event = %v, want %v", evs[0], event)
		}
	}
}

// testSecretCheck: without a candidate an empty store has no value; the first value
// is kept, across a reopen, and later calls return it.
func testSecretCheck(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	if _, err := s.SecretCheck(nil); !errors.Is(err, errNoSecretHere) {
		t.Fatalf("no candidate on an empty store: %v", err)
	}
	first, err := s.SecretCheck([]byte("first"))
	if err != nil || string(first) != "first" {
		t.Fatalf("%q, %v", first, err)
	}
	again, err := s.SecretCheck([]byte("second"))
	if err != nil || !bytes.Equal(again, first) {
		t.Fatalf("%q, %v", again, err)
	}
	if got, err := reopen(t).SecretCheck(nil); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("after a reopen: %q, %v", got, err)
	}
}

// testOutboxClaims: a claim gives the pending events oldest first, up to its limit;
// deleted ones are gone.
func testOutboxClaims(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	if evs, err := s.ClaimOutbox(10); err != nil || len(evs) != 0 {
		t.Fatalf("a claim of an empty outbox: %v, %v", evs, err)
	}
	for i := range 5 {
		mustUpdate(t, s, "app_a", fmt.Sprint("u_", i), 1, bump(true))
	}
	evs, err := s.ClaimOutbox(3)
	if err != nil || len(evs) != 3 || evs[0].GetIdentity() != "u_0" || evs[2].GetIdentity() != "u_2" {
		t.Fatalf("ClaimOutbox(3) = %v, %v", evs, err)
	}
	for _, ev := range evs {
		if err := s.DeleteOutbox(ev.GetSequence()); err != nil {
			t.Fatal(err)
		}
	}
	evs, err = s.ClaimOutbox(10)
	if err != nil || len(evs) != 2 || evs[0].GetIdentity() != "u_3" || evs[1].GetIdentity() != "u_4" {
		t.Fatalf("the next claim = %v, %v", evs, err)
	}
}

// testOutboxHandover: once a replica's delivery has emptied the outbox, an event
// another replica writes is that replica's to deliver at once (its update wakes its
// own delivery loop, not the first replica's).
func testOutboxHandover(t *testing.T, e storeEngine) {
	r := e.Replicas(t, 2)
	mustUpdate(t, r[0], "app_a", "u_a", 1, bump(true))
	evs, err := r[0].ClaimOutbox(10)
	if err != nil || len(evs) != 1 {
		t.Fatalf("claim: %v, %v", evs, err)
	}
	if err := r[0].DeleteOutbox(evs[0].GetSequence()); err != nil {
		t.Fatal(err)
	}
	if evs, err := r[0].ClaimOutbox(10); err != nil || len(evs) != 0 {
		t.Fatalf("the claim that finds the outbox empty: %v, %v", evs, err)
	}
	mustUpdate(t, r[1], "app_a", "u_b", 1, bump(true))
	if evs, err := r[1].ClaimOutbox(10); err != nil || len(evs) != 1 || evs[0].GetIdentity() != "u_b" {
		t.Fatalf("the other replica's claim of its own event: %v, %v; want it at once", evs, err)
	}
}

// testConcurrentGuesses: wrong guesses at once on every replica, each through the
// service's own RESTORE evaluation update, spend the budget exactly: MaxAttempts
// guesses spend an attempt, one erases the slot (one event), and every later one
// finds no backup. Two replicas never both spend the last attempt.
func testConcurrentGuesses(t *testing.T, e storeEngine) {
	const replicas, perReplica, budget = 4, 8, 10
	stores := e.Replicas(t, replicas)
	servers := make([]*Server, replicas)
	for i, s := range stores {
		srv, err := New(s, nil, Config{Secret: []byte(testSecret), MaxAttempts: budget, Clock: func() time.Time { return t0 }}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		servers[i] = srv
	}
	mustUpdate(t, stores[0], "app_a", "u_a", 1, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
		r.LatestVersion, r.RemainingAttempts = 1, budget
		r.Backup = &backupstoragev1.BackupStoredRecord{Version: 1, AuthKeyHash: make([]byte, 32)}
		return Change{Write: true}, nil
	})
	var (
		mu                      sync.Mutex
		spent, erased, notFound int
		remainingSeen           []uint32
		unexpected              []error
		wg                      sync.WaitGroup
		start                   = make(chan struct{})
	)
	for i := range replicas {
		wg.Go(func() {
			<-start
			for range perReplica {
				rec, err := stores[i].UpdateSlot("app_a", "u_a", 1, servers[i].spendEvaluation)
				mu.Lock()
				switch {
				case err == nil:
					spent++
					remainingSeen = append(remainingSeen, rec.GetRemainingAttempts())
				case errors.Is(err, errs.ErrPermission):
					erased++
				case errors.Is(err, errs.ErrNotFound):
					notFound++
				default:
					unexpected = append(unexpected, err)
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range unexpected {
		t.Errorf("a guess: %v", err)
	}
	if spent != budget || erased != 1 || notFound != replicas*perReplica-budget-1 {
		t.Errorf("%d guesses spent an attempt, %d erased, %d found nothing; want %d, 1 and %d", spent, erased, notFound, budget, replicas*perReplica-budget-1)
	}
	slices.Sort(remainingSeen)
	for i, left := range remainingSeen {
		if left != uint32(i) {
			t.Errorf("the guesses left %v attempts: two guesses were answered with the same budget", remainingSeen)
			break
		}
	}
	rec, err := stores[replicas-1].Slot("app_a", "u_a", 1)
	if err != nil || rec.GetBackup() != nil || rec.GetRemainingAttempts() != 0 || rec.GetLatestVersion() != 1 {
		t.Errorf("the slot after the guesses: %v, %v; want erased at version 1", rec, err)
	}
	if evs, err := stores[0].Outbox(10); err != nil || len(evs) != 1 {
		t.Errorf("outbox %v, %v; want one erasure event", evs, err)
	}
}

// testConcurrentPuts: in each round every replica stores a backup over the same
// expected version at once (PutBackup's compare-and-swap), the first round on a slot
// never written: exactly one wins each round, the others get ErrConflict. Then every
// replica makes the first backup of many new slots at once: one wins each.
func testConcurrentPuts(t *testing.T, e storeEngine) {
	const replicas, rounds = 4, 6
	stores := e.Replicas(t, replicas)
	for round := range uint64(rounds) {
		var wg sync.WaitGroup
		start := make(chan struct{})
		results := make(chan error, replicas)
		for i := range replicas {
			wg.Go(func() {
				<-start
				_, err := stores[i].UpdateSlot("app_a", "u_a", 1, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
					if r.GetBackup().GetVersion() != round {
						return Change{}, errs.Conflictf("the slot holds version %d, not %d", r.GetBackup().GetVersion(), round)
					}
					r.LatestVersion++
					r.Backup = &backupstoragev1.BackupStoredRecord{Version: r.GetLatestVersion(), Ciphertext: []byte(fmt.Sprint(i))}
					return Change{Write: true}, nil
				})
				results <- err
			})
		}
		close(start)
		wg.Wait()
		close(results)
		won := 0
		for err := range results {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, errs.ErrConflict):
				t.Errorf("round %d: %v; want nil or ErrConflict", round, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d puts over version %d succeeded; want exactly one", round, won, round)
		}
	}
	rec, err := stores[0].Slot("app_a", "u_a", 1)
	if err != nil || rec.GetLatestVersion() != rounds || rec.GetBackup().GetVersion() != rounds {
		t.Errorf("after %d rounds: %v, %v", rounds, rec, err)
	}

	// First backups of many new slots, every replica at once on each.
	const fresh = 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := map[string]int{}
	for i := range replicas {
		wg.Go(func() {
			for k := range fresh {
				id := fmt.Sprint("u_new_", k)
				_, err := stores[i].UpdateSlot("app_a", id, 2, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
					if r.GetBackup() != nil {
						return Change{}, errs.Conflictf("the slot holds version %d, not 0", r.GetBackup().GetVersion())
					}
					r.LatestVersion++
					r.Backup = &backupstoragev1.BackupStoredRecord{Version: r.GetLatestVersion()}
					return Change{Write: true}, nil
				})
				mu.Lock()
				switch {
				case err == nil:
					won[id]++
				case !errors.Is(err, errs.ErrConflict):
					t.Errorf("first backup of %s: %v; want nil or ErrConflict", id, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for k := range fresh {
		if id := fmt.Sprint("u_new_", k); won[id] != 1 {
			t.Errorf("%d first backups of %s succeeded; want exactly one", won[id], id)
		}
	}
}

// testConcurrentSecretChecks: replicas starting together on an empty store, each with
// its own candidate, all get the one value stored.
func testConcurrentSecretChecks(t *testing.T, e storeEngine) {
	stores := e.Replicas(t, 4)
	var wg sync.WaitGroup
	got := make([][]byte, len(stores))
	errc := make(chan error, len(stores))
	for i, s := range stores {
		wg.Go(func() {
			v, err := s.SecretCheck([]byte(fmt.Sprint("candidate ", i)))
			if err != nil {
				errc <- err
			}
			got[i] = v
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for _, v := range got {
		if !bytes.Equal(v, got[0]) || !bytes.HasPrefix(v, []byte("candidate ")) {
			t.Fatalf("the replicas got %q; want one of the candidates, the same for all", got)
		}
	}
}

// recordingPublisher stands for the messaging service's PublishEvent: it counts the
// publications of each event, taking a moment over each as a remote call does.
type recordingPublisher struct {
	mu    sync.Mutex
	count map[string]int
	order []string
}

func (p *recordingPublisher) PublishEvent(ctx context.Context, in *messagingv1.PublishEventRequest, _ ...grpc.CallOption) (*messagingv1.PublishEventResponse, error) {
	time.Sleep(time.Millisecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.count[in.GetEventId()]++
	p.order = append(p.order, in.GetEventId())
	return &messagingv1.PublishEventResponse{}, nil
}

func (p *recordingPublisher) delivered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.count)
}

// testConcurrentDelivery: every replica runs the service's outbox delivery
// (internal/outbox over ClaimOutbox and DeleteOutbox) while the replicas write events:
// each event is published exactly once and the outbox ends empty. Events written
// before delivery starts go out oldest first.
func testConcurrentDelivery(t *testing.T, e storeEngine) {
	const replicas, before, during = 3, 60, 60
	stores := e.Replicas(t, replicas)
	for i := range before {
		mustUpdate(t, stores[i%replicas], "app_a", fmt.Sprint("u_before_", i), 1, bump(true))
	}
	pub := &recordingPublisher{count: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	var loops sync.WaitGroup
	// One delivery loop per process: a bbolt engine's replicas are one process.
	var seen []Store
	for _, s := range stores {
		if slices.Contains(seen, s) {
			continue
		}
		seen = append(seen, s)
		cfg := outbox.Config{Store: outboxStore{s}, Publisher: pub, Poll: 5 * time.Millisecond, Retry: 5 * time.Millisecond,
			MaxRetry: 20 * time.Millisecond, Timeout: 5 * time.Second, Log: zaptest.NewLogger(t)}
		loops.Go(func() { cfg.Run(ctx) })
	}
	var writers sync.WaitGroup
	for w := range replicas {
		writers.Go(func() {
			for i := w; i < during; i += replicas {
				if _, err := stores[w].UpdateSlot("app_a", fmt.Sprint("u_during_", i), 1, bump(true)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	writers.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for pub.delivered() < before+during && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// Time for a second publication of any event to show.
	time.Sleep(50 * time.Millisecond)
	cancel()
	loops.Wait()

	pub.mu.Lock()
	defer pub.mu.Unlock()
	if len(pub.count) != before+during {
		t.Errorf("%d events delivered, want %d", len(pub.count), before+during)
	}
	for id, n := range pub.count {
		if n != 1 {
			t.Errorf("event %s was published %d times", id, n)
		}
	}
	var firsts []string
	for _, id := range pub.order {
		if len(firsts) < before && bytes.HasPrefix([]byte(id), []byte("e/u_before_")) {
			firsts = append(firsts, id)
		}
	}
	for i, id := range firsts {
		if want := fmt.Sprintf("e/u_before_%d/1/1", i); id != want {
			t.Errorf("publication %d of the events written before delivery was %s, want %s (oldest first)", i, id, want)
			break
		}
	}
	if evs, err := stores[0].Outbox(10); err != nil || len(evs) != 0 {
		t.Errorf("the outbox after delivery: %v, %v", evs, err)
	}
}
