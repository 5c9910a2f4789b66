package group

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/outbox"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// The conformance suite's cases of several replicas at once (testStore lists them):
// each runs two stores over one place and shows that an invariant holds across them.

// testConcurrentEpochCAS: two replicas commit the same epoch at once; the commit is a
// compare-and-swap on the group's epoch, read in the transaction, so one wins and the
// other gets ErrConflict, as epochs.go's writeCommit does. Each waits, after reading,
// for the other to read too: without the group's lock both would read epoch 0 and both
// would commit epoch 1.
func testConcurrentEpochCAS(t *testing.T, e storeEngine) {
	rs := e.Replicas(t, 2)
	update(t, rs[0], func(tx Tx) error {
		return tx.PutGroup(&storagev1.GroupRecord{AppId: testApp, GroupId: testGroupA})
	})
	errc := updateAtOnce(rs, func(i int, meet *rendezvous, tx Tx) error {
		committer := fmt.Sprintf("u_committer%d", i)
		g, err := tx.Group(testApp, testGroupA)
		if err != nil {
			return err
		}
		meet.arrive()
		if g.GetEpoch() != 0 {
			return epochConflict(g, 0)
		}
		g.Epoch, g.CommittedBy = 1, committer
		if err := tx.PutEpoch(testApp, testGroupA, &storagev1.GroupEpochRecord{Epoch: 1, CommittedBy: committer}); err != nil {
			return err
		}
		return tx.PutGroup(g)
	})
	var winner int
	switch {
	case errc[0] == nil && errors.Is(errc[1], errs.ErrConflict):
		winner = 0
	case errc[1] == nil && errors.Is(errc[0], errs.ErrConflict):
		winner = 1
	default:
		t.Fatalf("two commits of epoch 1: %v and %v; want one success and one ErrConflict", errc[0], errc[1])
	}
	view(t, rs[1], func(tx Tx) error {
		g, err := tx.Group(testApp, testGroupA)
		ep, eerr := tx.Epoch(testApp, testGroupA, 1)
		want := fmt.Sprintf("u_committer%d", winner)
		if err != nil || eerr != nil || g.GetEpoch() != 1 || g.GetCommittedBy() != want || ep.GetCommittedBy() != want {
			t.Errorf("after the race: group %v (%v), epoch 1 %v (%v); want the winner's", g, err, ep, eerr)
		}
		return nil
	})
}

// testConcurrentStatements: two replicas append a statement to the same head at once;
// the second sees the first's head and is refused, so the chain does not fork.
func testConcurrentStatements(t *testing.T, e storeEngine) {
	rs := e.Replicas(t, 2)
	update(t, rs[0], func(tx Tx) error {
		return tx.PutGroup(&storagev1.GroupRecord{AppId: testApp, GroupId: testGroupA, MembershipSequence: 1, MembershipHash: []byte{1}})
	})
	errc := updateAtOnce(rs, func(i int, meet *rendezvous, tx Tx) error {
		hash := []byte{2, byte(i)}
		g, err := tx.Group(testApp, testGroupA)
		if err != nil {
			return err
		}
		meet.arrive()
		if g.GetMembershipSequence() != 1 {
			return errs.Conflictf("the head moved to %d", g.GetMembershipSequence())
		}
		if err := tx.PutStatement(testApp, testGroupA, &storagev1.GroupStatementRecord{Sequence: 2, Hash: hash}); err != nil {
			return err
		}
		g.MembershipSequence, g.MembershipHash = 2, hash
		return tx.PutGroup(g)
	})
	if (errc[0] == nil) == (errc[1] == nil) || !errors.Is(errors.Join(errc...), errs.ErrConflict) {
		t.Fatalf("two statements on one head: %v and %v; want one success and one ErrConflict", errc[0], errc[1])
	}
	view(t, rs[1], func(tx Tx) error {
		g, _ := tx.Group(testApp, testGroupA)
		var sts []*storagev1.GroupStatementRecord
		_ = tx.Statements(testApp, testGroupA, 0, func(r *storagev1.GroupStatementRecord) (bool, error) { sts = append(sts, r); return true, nil })
		if len(sts) != 1 || g.GetMembershipSequence() != 2 || string(sts[0].GetHash()) != string(g.GetMembershipHash()) {
			t.Errorf("chain %v, head %d %x: want one statement, the head's", sts, g.GetMembershipSequence(), g.GetMembershipHash())
		}
		return nil
	})
}

// testConcurrentCreations: two replicas create the same group (ids are the caller's)
// at once: one does, the other finds it and is refused, and nothing of the two mixes.
func testConcurrentCreations(t *testing.T, e storeEngine) {
	rs := e.Replicas(t, 2)
	errc := updateAtOnce(rs, func(i int, meet *rendezvous, tx Tx) error {
		owner := fmt.Sprintf("u_owner%d", i)
		if _, err := tx.Group(testApp, testGroupA); err == nil {
			return errs.Existsf("group exists")
		} else if !errors.Is(err, errs.ErrNotFound) {
			return err
		}
		meet.arrive()
		if err := tx.PutMember(testApp, testGroupA, &storagev1.GroupMemberRecord{Identity: owner}); err != nil {
			return err
		}
		if err := tx.PutStatement(testApp, testGroupA, &storagev1.GroupStatementRecord{Sequence: 1, Hash: []byte(owner)}); err != nil {
			return err
		}
		return tx.PutGroup(&storagev1.GroupRecord{AppId: testApp, GroupId: testGroupA, Owner: owner, MemberCount: 1})
	})
	if (errc[0] == nil) == (errc[1] == nil) || !errors.Is(errors.Join(errc...), errs.ErrExists) {
		t.Fatalf("two creations of one group: %v and %v; want one success and one ErrExists", errc[0], errc[1])
	}
	view(t, rs[0], func(tx Tx) error {
		g, _ := tx.Group(testApp, testGroupA)
		ms, _ := tx.AllMembers(testApp, testGroupA)
		var sts []*storagev1.GroupStatementRecord
		_ = tx.Statements(testApp, testGroupA, 0, func(r *storagev1.GroupStatementRecord) (bool, error) { sts = append(sts, r); return true, nil })
		if len(ms) != 1 || ms[0].GetIdentity() != g.GetOwner() || len(sts) != 1 || string(sts[0].GetHash()) != g.GetOwner() {
			t.Errorf("group owned by %s with members %v and chain %v: want the winner's alone", g.GetOwner(), ms, sts)
		}
		return nil
	})
}

// testConcurrentCounters: many changes at once from several replicas, by Update and by
// Batch, each a read-modify-write of a group's record (as AuthorizeSend counts
// messages), some touching two groups: none is lost.
func testConcurrentCounters(t *testing.T, e storeEngine) {
	rs := e.Replicas(t, 3)
	groups := []string{testGroupA, testGroupB, "g_cccccccccccccccccccccccccccccccc"}
	update(t, rs[0], func(tx Tx) error {
		for _, g := range groups {
			if err := tx.PutGroup(&storagev1.GroupRecord{AppId: testApp, GroupId: g}); err != nil {
				return err
			}
		}
		return nil
	})
	bump := func(tx Tx, g string) error {
		rec, err := tx.Group(testApp, g)
		if err != nil {
			return err
		}
		rec.EpochMessageCount++
		return tx.PutGroup(rec)
	}
	const perWorker = 40
	var wg sync.WaitGroup
	var want [3]atomic.Int64
	errc := make(chan error, 64)
	for w := range 12 {
		s := rs[w%len(rs)]
		wg.Go(func() {
			for i := range perWorker {
				a, b := (w+i)%3, (w+2*i+1)%3
				var err error
				switch {
				case i%3 == 0 && a != b: // two groups, in one order (as the service's sweeper and card follower take theirs)
					a, b := min(a, b), max(a, b)
					err = s.Update(func(tx Tx) error {
						if err := bump(tx, groups[a]); err != nil {
							return err
						}
						return bump(tx, groups[b])
					})
					if err == nil {
						want[a].Add(1)
						want[b].Add(1)
					}
				case i%2 == 0:
					if err = s.Update(func(tx Tx) error { return bump(tx, groups[a]) }); err == nil {
						want[a].Add(1)
					}
				default:
					if err = s.Batch(func(tx Tx) error { return bump(tx, groups[a]) }); err == nil {
						want[a].Add(1)
					}
				}
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	view(t, rs[1], func(tx Tx) error {
		for i, g := range groups {
			rec, err := tx.Group(testApp, g)
			if err != nil || int64(rec.GetEpochMessageCount()) != want[i].Load() {
				t.Errorf("group %s counted %d (%v); %d changes committed", g, rec.GetEpochMessageCount(), err, want[i].Load())
			}
		}
		return nil
	})
}

// testOppositeOrders: two transactions that change the same two groups in opposite
// orders, each waiting after its first for the other to take its own: both commit,
// and neither change is lost. (PostgreSQL finds the deadlock and aborts one, which
// runs again: so Update's fn may run more than once.)
func testOppositeOrders(t *testing.T, e storeEngine) {
	rs := e.Replicas(t, 2)
	groups := []string{testGroupA, testGroupB}
	update(t, rs[0], func(tx Tx) error {
		for _, g := range groups {
			if err := tx.PutGroup(&storagev1.GroupRecord{AppId: testApp, GroupId: g}); err != nil {
				return err
			}
		}
		return nil
	})
	var runs atomic.Int32
	errc := updateAtOnce(rs, func(i int, meet *rendezvous, tx Tx) error {
		runs.Add(1)
		for j := range groups {
			g, err := tx.Group(testApp, groups[(i+j)%2])
			if err != nil {
				return err
			}
			if j == 0 {
				meet.arrive()
			}
			g.EpochMessageCount++
			if err := tx.PutGroup(g); err != nil {
				return err
			}
		}
		return nil
	})
	for _, err := range errc {
		if err != nil {
			t.Error(err)
		}
	}
	view(t, rs[1], func(tx Tx) error {
		for _, id := range groups {
			if g, err := tx.Group(testApp, id); err != nil || g.GetEpochMessageCount() != 2 {
				t.Errorf("group %s counted %d (%v); want both changes", id, g.GetEpochMessageCount(), err)
			}
		}
		return nil
	})
	t.Logf("%d runs of 2 transactions", runs.Load())
}

// testConcurrentCardCursor: two replicas' card followers read the cursor, then apply
// the same page of events: the cursor, read again in the applying transaction, tells
// the second that the first applied it (as background.go's followOnce checks), so the
// page is applied once. Without the cursor's lock both would read the old cursor.
func testConcurrentCardCursor(t *testing.T, e storeEngine) {
	rs := e.Replicas(t, 2)
	update(t, rs[0], func(tx Tx) error { return tx.PutGroup(&storagev1.GroupRecord{AppId: testApp, GroupId: testGroupA}) })
	for round := range 3 {
		meet := newRendezvous(2, 300*time.Millisecond)
		var wg sync.WaitGroup
		for _, s := range rs {
			wg.Go(func() {
				var cursor uint64
				if err := s.View(func(tx Tx) error {
					var err error
					cursor, err = tx.CardCursor()
					return err
				}); err != nil {
					t.Error(err)
					return
				}
				meet.arrive() // both have read the cursor
				err := s.Update(func(tx Tx) error {
					if cur, err := tx.CardCursor(); err != nil || cur != cursor {
						return err
					}
					if err := bumpCards(tx); err != nil {
						return err
					}
					return tx.SetCardCursor(cursor + 10)
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		view(t, rs[1], func(tx Tx) error {
			cur, err := tx.CardCursor()
			g, gerr := tx.Group(testApp, testGroupA)
			if err != nil || gerr != nil || cur != uint64(10*(round+1)) || g.GetCardsVersion() != uint64(round+1) {
				t.Errorf("round %d: cursor %d (%v), pages applied %d (%v); want each page once", round, cur, err, g.GetCardsVersion(), gerr)
			}
			return nil
		})
	}
}

// bumpCards stands for applying a page of card events: it moves testGroupA's
// cards_version, after a pause that lets a concurrent follower catch up.
func bumpCards(tx Tx) error {
	g, err := tx.Group(testApp, testGroupA)
	if err != nil {
		return err
	}
	time.Sleep(50 * time.Millisecond)
	g.CardsVersion++
	return tx.PutGroup(g)
}

// testConcurrentSweepers: two replicas' sweepers handle the same elapsed rotation
// periods at once: each group is marked, and its members told, once, and the due
// entries are gone.
func testConcurrentSweepers(t *testing.T, e storeEngine) {
	rs := e.Replicas(t, 2)
	now := time.Unix(1_800_000_000, 0)
	started := now.Add(-2 * time.Hour)
	const n = 40
	update(t, rs[0], func(tx Tx) error {
		for i := range n {
			g := &storagev1.GroupRecord{AppId: testApp, GroupId: fmt.Sprintf("g_due%02d", i), Epoch: 1, EncryptionMode: uint32(groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED),
				RotationPeriod: durationpb.New(time.Hour), EpochStartedAt: timestamppb.New(started)}
			if err := reschedule(tx, g); err != nil {
				return err
			}
			if err := tx.PutGroup(g); err != nil {
				return err
			}
			if err := tx.PutMember(testApp, g.GetGroupId(), &storagev1.GroupMemberRecord{Identity: testUser1}); err != nil {
				return err
			}
		}
		return nil
	})
	servers := make([]*Server, len(rs))
	for i, s := range rs {
		srv, err := New(s, nil, nil, Config{Clock: func() time.Time { return now }}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		servers[i] = srv
	}
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Go(func() {
			if err := srv.sweep(now); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	view(t, rs[1], func(tx Tx) error {
		events := map[string]int{}
		recs, err := tx.Outbox(10 * n)
		if err != nil {
			return err
		}
		for _, r := range recs {
			ev := &groupv1.GroupEvent{}
			if err := proto.Unmarshal(r.GetPayload(), ev); err != nil {
				return err
			}
			if ev.GetKind() == groupv1.GroupEventKind_GROUP_EVENT_KIND_ROTATION_REQUIRED {
				events[r.GetGroupId()]++
			}
		}
		for i := range n {
			id := fmt.Sprintf("g_due%02d", i)
			g, err := tx.Group(testApp, id)
			if err != nil || !g.GetRotationRequired() || events[id] != 1 {
				t.Errorf("group %s: rotation required %t (%v), %d ROTATION_REQUIRED events; want marked once", id, g.GetRotationRequired(), err, events[id])
			}
		}
		if due, err := tx.DueGroups(now, 10); err != nil || len(due) != 0 {
			t.Errorf("due entries left: %v, %v", due, err)
		}
		return nil
	})
}

// countingPublisher records the events published, slowly enough that concurrent
// deliveries overlap.
type countingPublisher struct {
	mu  sync.Mutex
	ids []string
}

func (p *countingPublisher) PublishEvent(_ context.Context, in *messagingv1.PublishEventRequest, _ ...grpc.CallOption) (*messagingv1.PublishEventResponse, error) {
	time.Sleep(time.Millisecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ids = append(p.ids, in.GetEventId())
	return &messagingv1.PublishEventResponse{}, nil
}

// testConcurrentDeliveries: two replicas deliver the outbox at once: each event is
// published once, in the order written. An engine whose storage has one process has
// one delivery loop, so there is nothing to share.
func testConcurrentDeliveries(t *testing.T, e storeEngine) {
	if e.oneProcess {
		t.Skip("one process per storage: its one delivery loop is the only one")
	}
	rs := e.Replicas(t, 2)
	const n = 150
	var want []string
	update(t, rs[0], func(tx Tx) error {
		for i := range n {
			id := fmt.Sprintf("ev%03d", i)
			want = append(want, id)
			if err := tx.AppendOutbox(&storagev1.GroupOutboxRecord{AppId: testApp, EventId: id, Recipients: []string{testUser1}}); err != nil {
				return err
			}
		}
		return nil
	})
	pub := &countingPublisher{}
	var wg sync.WaitGroup
	for _, s := range rs {
		wg.Go(func() {
			cfg := outbox.Config{Store: outboxStore{s}, Publisher: pub, Timeout: 5 * time.Second, Log: zaptest.NewLogger(t)}
			// Each replica keeps delivering until the outbox is empty, as its loop does.
			for range 50 {
				if err := cfg.Deliver(context.Background()); err != nil {
					t.Error(err)
					return
				}
				var left []*storagev1.GroupOutboxRecord
				_ = s.View(func(tx Tx) error { left, _ = tx.Outbox(1); return nil })
				if len(left) == 0 {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	if !slices.Equal(pub.ids, want) {
		t.Errorf("published %d events (first %v); want each of %d once, in order", len(pub.ids), pub.ids[:min(5, len(pub.ids))], n)
	}
}
