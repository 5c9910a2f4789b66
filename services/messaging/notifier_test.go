package messaging

import (
	"strings"
	"testing"

	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/v1"
)

// items returns inbox items from..to (inclusive) with envelopes of size bytes.
func items(from, to uint64, size int) []InboxItem {
	var out []InboxItem
	for seq := from; seq <= to; seq++ {
		rec := &storagev1.MessagingLogRecord{Entry: &storagev1.MessagingLogRecord_Message{
			Message: &storagev1.StoredMessage{Sequence: seq, Envelope: []byte(strings.Repeat("x", size))},
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
	n := newNotifier(4)
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
