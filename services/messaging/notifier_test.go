package messaging

import (
	"fmt"
	"strings"
	"testing"

	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// items returns inbox items from..to (inclusive) with envelopes of size bytes.
func items(from, to uint64, size int) []InboxItem {
	var out []InboxItem
	for seq := from; seq <= to; seq++ {
		rec := &messagingstoragev1.MessagingLogRecord{Entry: &messagingstoragev1.MessagingLogRecord_Message{
			Message: &messagingstoragev1.StoredMessage{Sequence: seq, Envelope: []byte(strings.Repeat("x", size))},
		}}
		out = append(out, InboxItem{Sequence: seq, Record: rec})
	}
	return out
}

func itemSeqs(its []InboxItem) []uint64 {
	var out []uint64
	for _, it := range its {
		out = append(out, it.Sequence)
	}
	return out
}

// TestNotifierRecent: the notifier keeps the latest items of a watched inbox within
// its bounds, hands out only a run that reaches the latest sequence without a gap, and
// answers nil (read the store) otherwise.
func TestNotifierRecent(t *testing.T) {
	t.Parallel()
	n := newNotifier(4, DefaultDeliveryCacheBytes)
	w, err := n.open("app", "u")
	if err != nil {
		t.Fatal(err)
	}
	n.bump([]InboxHead{{AppID: "app", Identity: "u", Head: 3, Items: items(1, 3, 10)}})
	if got := itemSeqs(n.since(w, 1)); len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Errorf("since 1: %v, want [2 3]", got)
	}
	if got := n.since(w, 3); got != nil {
		t.Errorf("since the latest: %v, want nil", got)
	}
	// More than recentItems: the oldest go, and a stream behind them reads the store.
	n.bump([]InboxHead{{AppID: "app", Identity: "u", Head: 100, Items: items(4, 100, 10)}})
	if got := n.since(w, 1); got != nil {
		t.Errorf("since 1 after 100 items: %d items, want nil (read the store)", len(got))
	}
	if got := itemSeqs(n.since(w, 100-recentItems)); len(got) != recentItems || got[0] != 101-recentItems {
		t.Errorf("since %d: %v", 100-recentItems, got)
	}
	// A batch that does not follow on (a store that hands no items over, or a gap)
	// replaces them.
	n.bump([]InboxHead{{AppID: "app", Identity: "u", Head: 105}})
	if got := n.since(w, 100); got != nil {
		t.Errorf("after a batch without items: %v, want nil", got)
	}
	n.bump([]InboxHead{{AppID: "app", Identity: "u", Head: 107, Items: items(106, 107, 10)}})
	if got := n.since(w, 105); len(got) != 2 {
		t.Errorf("since 105: %v, want [106 107]", itemSeqs(got))
	}
	if got := n.since(w, 104); got != nil {
		t.Errorf("since 104, which memory lacks: %v, want nil", itemSeqs(got))
	}
	// Large envelopes: at most recentBytes are kept, and always the latest item.
	big := recentBytes / 3
	n.bump([]InboxHead{{AppID: "app", Identity: "u", Head: 112, Items: items(108, 112, big)}})
	if w.recentSize > recentBytes || len(w.recent) != 3 || w.recent[2].Sequence != 112 {
		t.Errorf("kept %v (%d bytes), want the latest 3 within %d bytes", itemSeqs(w.recent), w.recentSize, recentBytes)
	}
	n.bump([]InboxHead{{AppID: "app", Identity: "u", Head: 113, Items: items(113, 113, 2*recentBytes)}})
	if len(w.recent) != 1 || w.recent[0].Sequence != 113 {
		t.Errorf("an item over the bound: kept %v, want it alone", itemSeqs(w.recent))
	}
	// Inboxes nobody watches keep nothing.
	n.bump([]InboxHead{{AppID: "app", Identity: "other", Head: 3, Items: items(1, 3, 10)}})
	if len(n.watches) != 1 {
		t.Errorf("%d watches, want 1", len(n.watches))
	}
}

// heldBytes walks every watch and adds up the distinct records they keep, as the
// cache should account for them, independently of its own figure.
func heldBytes(n *notifier) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	seen := map[*messagingstoragev1.MessagingLogRecord]bool{}
	var total int64
	for _, w := range n.watches {
		for _, it := range w.recent {
			if !seen[it.Record] {
				seen[it.Record] = true
				total += int64(it.Size()) + recordOverhead
			}
		}
	}
	return total
}

// checkRuns fails unless every watch keeps a run of consecutive items that ends at its
// latest sequence (or nothing).
func checkRuns(t *testing.T, n *notifier) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, w := range n.watches {
		for i, it := range w.recent {
			if want := w.latest - uint64(len(w.recent)-1-i); it.Sequence != want {
				t.Fatalf("watch %q keeps %v, latest %d: not a run that ends at the latest", k, itemSeqs(w.recent), w.latest)
			}
		}
	}
}

// TestNotifierBudget: what all watches keep together stays within the budget however
// many there are, a record kept by many watches (a group message) counts once, the
// oldest records go first, and what remains is still a run that since can hand out.
func TestNotifierBudget(t *testing.T) {
	t.Parallel()
	const size = 1000
	per := int64(size + recordOverhead)
	budget := 20 * per
	n := newNotifier(4, budget)
	var ws []*watch
	for i := range 50 {
		w, err := n.open("app", fmt.Sprint("u", i))
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	// Each identity gets 3 items of its own: 150 records, far over the budget.
	for i := range ws {
		n.bump([]InboxHead{{AppID: "app", Identity: fmt.Sprint("u", i), Head: 3, Items: items(1, 3, size)}})
		if got, want := heldBytes(n), budget; got > want {
			t.Fatalf("after %d identities: %d bytes kept, budget %d", i+1, got, want)
		}
	}
	if got, _ := n.cachedBytes(); got != heldBytes(n) || got < budget-per {
		t.Errorf("cache accounts %d bytes, the watches keep %d, budget %d: want them equal and the budget nearly used", got, heldBytes(n), budget)
	}
	checkRuns(t, n)
	// The latest identities' items are the ones kept; the first ones' went first.
	if got := n.since(ws[len(ws)-1], 0); len(got) != 3 {
		t.Errorf("the last identity's items: %v, want all 3", itemSeqs(got))
	}
	if got := n.since(ws[0], 0); got != nil {
		t.Errorf("the first identity's items: %v, want nil (read the store)", itemSeqs(got))
	}

	// One group message in every member's inbox is one record, counted once.
	group := items(4, 4, size)[0].Record
	var heads []InboxHead
	for i := range ws {
		heads = append(heads, InboxHead{AppID: "app", Identity: fmt.Sprint("u", i), Head: 4, Items: []InboxItem{{Sequence: 4, Record: group}}})
	}
	n.bump(heads)
	if got, recs := n.cachedBytes(); got > budget || got != heldBytes(n) {
		t.Errorf("after a group message to 50: %d bytes in %d records, the watches keep %d, budget %d", got, recs, heldBytes(n), budget)
	}
	for i, w := range ws {
		if got := n.since(w, 3); len(got) != 1 || got[0].Record != group {
			t.Fatalf("identity %d since 3: %v, want the group message", i, itemSeqs(got))
		}
	}
	checkRuns(t, n)

	// An item larger than the whole budget is not kept, and breaks the run.
	n.bump([]InboxHead{{AppID: "app", Identity: "u1", Head: 5, Items: items(5, 5, int(budget))}})
	if got := n.since(ws[1], 4); got != nil {
		t.Errorf("an item over the budget: since 4 gave %v, want nil", itemSeqs(got))
	}
	checkRuns(t, n)

	// Closing the streams lets everything go.
	for i := range ws {
		n.close("app", fmt.Sprint("u", i))
	}
	if got, recs := n.cachedBytes(); got != 0 || recs != 0 {
		t.Errorf("after every stream closed: %d bytes in %d records kept", got, recs)
	}

	// A negative budget keeps nothing.
	off := newNotifier(4, -1)
	w, _ := off.open("app", "u")
	off.bump([]InboxHead{{AppID: "app", Identity: "u", Head: 3, Items: items(1, 3, 10)}})
	if got := off.since(w, 0); got != nil {
		t.Errorf("cache off: since 0 gave %v, want nil", itemSeqs(got))
	}
}
