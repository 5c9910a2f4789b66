package messaging

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// The conformance suite's cases of several replicas at once (testStore lists them):
// stores over one place, written concurrently, and the invariants that hold across them.

// testConcurrentSends: replicas send and retry the same messages at once into shared
// conversations: every message is stored once, each conversation's sequences and
// each inbox's are gap-free, and every replica answers a message with its sequence.
func testConcurrentSends(t *testing.T, e storeEngine) {
	const replicas, users, keys, batch = 2, 4, 60, 8
	stores := e.Replicas(t, replicas)
	ids := make([]string, users)
	for i := range ids {
		ids[i] = cfID(i + 1)
	}
	const group = "g_all"
	// op returns the message sender i's key k stands for: the same everywhere.
	op := func(i, k int) *Op {
		sender, cmid := ids[i], fmt.Sprint("k", k)
		switch k % 3 {
		case 0:
			return cfGroupSend(group, sender, ids, uint64(1+k/20), cmid, "group "+cmid)
		default:
			return cfSend(sender, ids[(i+k%3)%users], cmid, "direct "+cmid)
		}
	}
	type answer struct {
		conv string
		seq  uint64
	}
	var mu sync.Mutex
	answers := map[string]answer{} // sender 0 key
	var wg sync.WaitGroup
	for r, s := range stores {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 7))
			var all [][2]int
			for i := range users {
				for k := range keys {
					all = append(all, [2]int{i, k})
				}
			}
			rng.Shuffle(len(all), func(a, b int) { all[a], all[b] = all[b], all[a] })
			for len(all) > 0 {
				n := min(batch, len(all))
				ops := make([]*Op, n)
				for j, ik := range all[:n] {
					ops[j] = op(ik[0], ik[1])
				}
				all = all[n:]
				b := &Batch{Now: time.Now(), Retention: time.Hour, Ops: ops}
				if err := s.Apply(b); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, o := range ops {
					if o.Err != nil {
						t.Errorf("%s %q: %v", o.Send.Sender, o.Send.ClientMessageID, o.Err)
						continue
					}
					k := key2(o.Send.Sender, o.Send.ClientMessageID)
					got := answer{o.Send.ConversationID, o.Send.Sequence}
					if prev, ok := answers[k]; ok && prev != got {
						t.Errorf("%s %q answered as %v and as %v", o.Send.Sender, o.Send.ClientMessageID, prev, got)
					}
					answers[k] = got
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	s := stores[0]
	convs := map[string]bool{}
	for i := range users {
		for k := range keys {
			convs[op(i, k).Send.ConversationID] = true
		}
	}
	stored := map[string]int{}
	inboxWant := map[string]int{}
	for conv := range convs {
		recs, _, err := s.Messages(cfApp, conv, MessageQuery{Forward: true, Limit: 100000, MaxBytes: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range recs {
			m := r.GetMessage()
			if m.GetSequence() != uint64(i+1) {
				t.Errorf("%s: message %d has sequence %d: a gap or a duplicate", conv, i+1, m.GetSequence())
				break
			}
			k := key2(m.GetSender(), m.GetClientMessageId())
			stored[k]++
			if a := answers[k]; a.conv != conv || a.seq != m.GetSequence() {
				t.Errorf("%s %q stored as %s/%d, answered %v", m.GetSender(), m.GetClientMessageId(), conv, m.GetSequence(), a)
			}
		}
		if c, err := s.Conversation(cfApp, conv); err != nil || c.GetLatestSequence() != uint64(len(recs)) {
			t.Errorf("%s: latest sequence %d (%v), %d messages", conv, c.GetLatestSequence(), err, len(recs))
		}
	}
	for i := range users {
		for k := range keys {
			o := op(i, k).Send
			if n := stored[key2(o.Sender, o.ClientMessageID)]; n != 1 {
				t.Errorf("%s %q stored %d times", o.Sender, o.ClientMessageID, n)
			}
			for _, r := range o.Recipients {
				inboxWant[r]++
			}
		}
	}
	for _, id := range ids {
		got := inboxSeqs(t, s, id)
		if !slices.Equal(got, seqRange(1, uint64(inboxWant[id]))) {
			t.Errorf("%s's inbox holds %d items (%v...), want 1 to %d without a gap", id, len(got), got[:min(len(got), 5)], inboxWant[id])
		}
		if head, err := s.InboxHead(cfApp, id); err != nil || head != uint64(inboxWant[id]) {
			t.Errorf("%s's inbox head %d (%v), want %d", id, head, err, inboxWant[id])
		}
	}
}

// testConcurrentInboxes: replicas write at once into one inbox through conversations
// and events they do not share: the inbox's sequences stay gap-free.
func testConcurrentInboxes(t *testing.T, e storeEngine) {
	const batches, perBatch = 30, 4
	stores := e.Replicas(t, 2)
	hub := cfID(0)
	var wg sync.WaitGroup
	for r, s := range stores {
		wg.Go(func() {
			for i := range batches {
				var ops []*Op
				for j := range perBatch {
					from := cfID(100*(r+1) + j)
					if j%2 == 0 {
						ops = append(ops, cfEvent(fmt.Sprintf("e%d-%d-%d", r, i, j), "p", hub, from))
					} else {
						ops = append(ops, cfSend(from, hub, fmt.Sprint("m", i), "x"))
					}
				}
				if err := s.Apply(&Batch{Now: time.Now(), Retention: time.Hour, Ops: ops}); err != nil {
					t.Error(err)
					return
				}
				for _, op := range ops {
					if op.Err != nil {
						t.Error(op.Err)
					}
				}
			}
		})
	}
	wg.Wait()
	want := uint64(2 * batches * perBatch)
	if got := inboxSeqs(t, stores[0], hub); !slices.Equal(got, seqRange(1, want)) {
		t.Errorf("the shared inbox holds %d items (%v...), want 1 to %d without a gap", len(got), got[:min(len(got), 8)], want)
	}
	if head, err := stores[1].InboxHead(cfApp, hub); err != nil || head != want {
		t.Errorf("the shared inbox's head %d (%v), want %d", head, err, want)
	}
}

// testConcurrentKeyReuse: replicas store one sender's key into two conversations at
// once: one is stored, the other is refused, never both.
func testConcurrentKeyReuse(t *testing.T, e storeEngine) {
	const keys = 40
	stores := e.Replicas(t, 2)
	alice := cfID(1)
	peers := []string{cfID(2), cfID(3)}
	results := make([][]*Op, 2)
	var wg sync.WaitGroup
	for r, s := range stores {
		wg.Go(func() {
			for k := range keys {
				op := cfSend(alice, peers[r], fmt.Sprint("k", k), "x")
				if err := s.Apply(&Batch{Now: time.Now(), Retention: time.Hour, Ops: []*Op{op}}); err != nil {
					t.Error(err)
					return
				}
				results[r] = append(results[r], op)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for k := range keys {
		a, b := results[0][k], results[1][k]
		okA, okB := a.Err == nil, b.Err == nil
		if okA == okB {
			t.Errorf("key k%d: replica errors %v and %v; want one stored and one refused", k, a.Err, b.Err)
			continue
		}
		refused := b
		if !okA {
			refused = a
		}
		if !errors.Is(refused.Err, errs.ErrExists) {
			t.Errorf("key k%d refused with %v, want ErrExists", k, refused.Err)
		}
	}
	total := 0
	for _, p := range peers {
		seqs := messageSeqs(t, stores[0], cfDirect(alice, p))
		if !slices.Equal(seqs, seqRange(1, uint64(len(seqs)))) {
			t.Errorf("conversation with %s: %v", p, seqs)
		}
		total += len(seqs)
	}
	if total != keys {
		t.Errorf("%d messages stored for %d keys", total, keys)
	}
}

// testConcurrentEvents: replicas publish the same events at once: each is stored once,
// and reaches each inbox once.
func testConcurrentEvents(t *testing.T, e storeEngine) {
	const events = 40
	stores := e.Replicas(t, 2)
	recipients := []string{cfID(1), cfID(2), cfID(3)}
	dups := make([]int, 2)
	var wg sync.WaitGroup
	for r, s := range stores {
		wg.Go(func() {
			for i := range events {
				op := cfEvent(fmt.Sprint("e", i), "p", recipients...)
				if err := s.Apply(&Batch{Now: time.Now(), Retention: time.Hour, Ops: []*Op{op, cfSend(recipients[r], recipients[2], fmt.Sprint("m", i), "x")}}); err != nil {
					t.Error(err)
					return
				}
				if op.Err != nil || op.Event.RecipientCount != 3 {
					t.Errorf("event %d: %v %+v", i, op.Err, op.Event)
				}
				if op.Event.Duplicate {
					dups[r]++
				}
			}
		})
	}
	wg.Wait()
	if dups[0]+dups[1] != events {
		t.Errorf("%d and %d duplicates, want %d in all: each event stored once", dups[0], dups[1], events)
	}
	want := map[string]int{recipients[0]: events * 2, recipients[1]: events * 2, recipients[2]: events * 3}
	for id, n := range want {
		got := inboxSeqs(t, stores[1], id)
		if !slices.Equal(got, seqRange(1, uint64(n))) {
			t.Errorf("%s's inbox holds %d items, want 1 to %d without a gap", id, len(got), n)
		}
		items, _, _ := stores[1].Inbox(cfApp, id, 0, 1000, 1<<30)
		seen := map[string]bool{}
		for _, it := range items {
			if ev := it.Record.GetEvent(); ev != nil {
				if seen[ev.GetEventId()] {
					t.Errorf("%s got event %s twice", id, ev.GetEventId())
				}
				seen[ev.GetEventId()] = true
			}
		}
		if len(seen) != events {
			t.Errorf("%s got %d events, want %d", id, len(seen), events)
		}
	}
}

// testConcurrentSweeps: replicas sweep at once while they write: every expired entry
// is deleted once, and nothing that has not expired is.
func testConcurrentSweeps(t *testing.T, e storeEngine) {
	stores := e.Replicas(t, 2)
	alice, bob := cfID(1), cfID(2)
	const old = 200
	var ops []*Op
	for i := range old {
		ops = append(ops, cfSend(alice, bob, fmt.Sprint("old", i), "x"))
	}
	cfApply(t, stores[0], cfT0, ops...)
	ops = nil
	for i := range 50 {
		ops = append(ops, cfEvent(fmt.Sprint("ev", i), "p", alice, bob))
	}
	cfApply(t, stores[1], cfT0.Add(time.Second), ops...)
	now := cfT0.Add(time.Hour + time.Second) // everything above has expired
	deleted := make([]int, 2)
	var wg sync.WaitGroup
	for r, s := range stores {
		wg.Go(func() {
			for i := range 20 {
				op := cfSend(bob, alice, fmt.Sprint("new", r, "-", i), "y")
				if err := s.Apply(&Batch{Now: now, Retention: time.Hour, Ops: []*Op{op}}); err != nil || op.Err != nil {
					t.Error(err, op.Err)
					return
				}
				n, _, err := s.Sweep(now, 7)
				if err != nil {
					t.Error(err)
					return
				}
				deleted[r] += n
			}
			for {
				n, more, err := s.Sweep(now, 7)
				if err != nil {
					t.Error(err)
					return
				}
				deleted[r] += n
				if !more {
					return
				}
			}
		})
	}
	wg.Wait()
	if got := deleted[0] + deleted[1]; got != old+50 {
		t.Errorf("the replicas deleted %d and %d entries, %d in all; want %d", deleted[0], deleted[1], got, old+50)
	}
	seqs := messageSeqs(t, stores[0], cfDirect(alice, bob))
	if !slices.Equal(seqs, seqRange(old+1, old+40)) {
		t.Errorf("messages after the sweeps: %d (%v...), want %d to %d", len(seqs), seqs[:min(5, len(seqs))], old+1, old+40)
	}
	if got := inboxSeqs(t, stores[1], alice); !slices.Equal(got, seqRange(old+51, old+90)) {
		t.Errorf("alice's inbox after the sweeps: %d items, want %d to %d", len(got), old+51, old+90)
	}
}
