package messaging

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
)

// TestPostgresWatchFrozenServer: a listening connection to a server that stopped
// answering without closing it (a host frozen or cut off: no reset, no reply; the old
// primary after a failover) is found dead by a ping after a quiet poll, and Watch
// listens again on a new connection. Without the ping it would wait on the dead one
// for as long as TCP keepalive takes (minutes), and learn of the other replicas'
// messages only by polling. A server that answers keeps its connection.
func TestPostgresWatchFrozenServer(t *testing.T) {
	c := pgtest.NewCluster(t, pgtest.Options{})
	db, err := c.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	const poll = 200 * time.Millisecond
	s := openPostgresPoll(t, db.URL, poll)
	watcher(t, s, cfID(2))
	waitListening(t, s, 1)
	time.Sleep(10 * poll) // quiet polls, each with a ping answered
	if n := s.listening.Load(); n != 1 {
		t.Fatalf("Watch listened %d times on a server that answers; want once", n)
	}
	c.Freeze()
	time.Sleep(poll + listenPing + time.Second)
	c.Thaw()
	waitListening(t, s, 2)
}

// TestPostgresWakeUpItems: a wake-up from another replica reads, in one statement, the
// new items of the inboxes this replica watches, for their streams to take from
// memory: exactly the items past the head the replica knows, in order, up to the
// wake-up's head. An inbox it does not watch, or already knows at that head, is not
// reported; an inbox whose new items are not all there (one gone, or more than the
// notifier keeps) is reported without items, so its streams read the store and the
// notifier never hands over a run with a hole.
func TestPostgresWakeUpItems(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := openPostgres(t, db.URL)
	alice, bob, carol := cfID(1), cfID(2), cfID(3)
	wantOK(t, cfApply(t, s, time.Now(), cfSend(alice, bob, "m1", "one"), cfSend(alice, bob, "m2", "two"), cfSend(alice, bob, "m3", "three")).Ops...)
	h := func(id string, head uint64) InboxHead { return InboxHead{AppID: cfApp, Identity: id, Head: head} }
	ctx := context.Background()
	type want struct {
		identity string
		items    []string // nil: reported without items
	}
	check := func(t *testing.T, got []InboxHead, wants ...want) {
		t.Helper()
		if len(got) != len(wants) {
			t.Fatalf("reported %v; want %v", got, wants)
		}
		for i, w := range wants {
			if got[i].Identity != w.identity {
				t.Fatalf("report %d: %s; want %s", i, got[i].Identity, w.identity)
			}
			var bodies []string
			for j, it := range got[i].Items {
				if want := got[i].Head - uint64(len(got[i].Items)-1-j); it.Sequence != want {
					t.Fatalf("%s's item %d: inbox sequence %d; want %d", w.identity, j, it.Sequence, want)
				}
				bodies = append(bodies, string(it.Record.GetMessage().GetEnvelope()))
			}
			if !slices.Equal(bodies, w.items) {
				t.Fatalf("%s's items %q; want %q", w.identity, bodies, w.items)
			}
		}
	}
	t.Run("the new items of watched inboxes", func(t *testing.T) {
		got := s.withItems(ctx, []InboxHead{h(bob, 3), h(alice, 3), h(carol, 5)}, []InboxHead{h(bob, 1), h(alice, 3)})
		check(t, got, want{bob, []string{"two", "three"}})
	})
	t.Run("from the first item", func(t *testing.T) {
		got := s.withItems(ctx, []InboxHead{h(alice, 3), h(bob, 3)}, []InboxHead{h(bob, 0), h(alice, 2)})
		check(t, got, want{alice, []string{"three"}}, want{bob, []string{"one", "two", "three"}})
	})
	t.Run("more than the notifier keeps", func(t *testing.T) {
		got := s.withItems(ctx, []InboxHead{h(bob, recentItems+1)}, []InboxHead{h(bob, 0)})
		check(t, got, want{bob, nil})
	})
	t.Run("an item missing", func(t *testing.T) {
		db.Exec(t, "DELETE FROM "+Schema+".inbox WHERE identity = $1 AND inbox_sequence = 2", bob)
		got := s.withItems(ctx, []InboxHead{h(bob, 3), h(alice, 3)}, []InboxHead{h(bob, 0), h(alice, 0)})
		check(t, got, want{bob, nil}, want{alice, []string{"one", "two", "three"}})
		got = s.withItems(ctx, []InboxHead{h(bob, 3)}, []InboxHead{h(bob, 1)})
		check(t, got, want{bob, nil})
		got = s.withItems(ctx, []InboxHead{h(bob, 3)}, []InboxHead{h(bob, 2)})
		check(t, got, want{bob, []string{"three"}})
	})
}

// TestPostgresWakeUpsMerged: wake-ups handled together (coalesce) report each inbox
// once, at the highest head they name, with its items read once; the store's own
// wake-ups are skipped (its committer woke its streams already).
func TestPostgresWakeUpsMerged(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := openPostgres(t, db.URL)
	alice, bob := cfID(1), cfID(2)
	wantOK(t, cfApply(t, s, time.Now(), cfSend(alice, bob, "m1", "one"), cfSend(alice, bob, "m2", "two"), cfSend(alice, bob, "m3", "three")).Ops...)
	wake := func(from, id string, head int) string {
		return fmt.Sprintf(`{"f":%q,"h":[[%q,%q,%d]]}`, from, cfApp, id, head)
	}
	known := []InboxHead{{AppID: cfApp, Identity: bob, Head: 1}, {AppID: cfApp, Identity: alice, Head: 0}}
	var calls [][]InboxHead
	s.wokenUp(context.Background(), []string{wake("other", bob, 2), wake("other", bob, 3), wake(s.id, alice, 3), wake("other", bob, 2)},
		func() []InboxHead { return known }, func(hs []InboxHead) { calls = append(calls, hs) })
	if len(calls) != 1 || len(calls[0]) != 1 {
		t.Fatalf("reported %v; want bob's inbox once", calls)
	}
	h := calls[0][0]
	if h.Identity != bob || h.Head != 3 || len(h.Items) != 2 || h.Items[0].Sequence != 2 || string(h.Items[1].Record.GetMessage().GetEnvelope()) != "three" {
		t.Fatalf("reported %s at %d with %d items; want bob at 3 with items 2 and 3", h.Identity, h.Head, len(h.Items))
	}
}
