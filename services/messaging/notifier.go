package messaging

import (
	"slices"
	"sync"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// notifier wakes the streams of an identity when its inbox grows. It keeps, per (app,
// identity) with an open stream, the latest inbox sequence and a channel that is closed
// (and replaced) at every change: a stream takes the channel, reads the store, and
// waits on the channel only if it found nothing new, so no change is missed and any
// number of changes while it was busy wake it once. Nothing is queued per stream: a
// slow stream reads what it missed from the store.
//
// It also keeps the identity's latest committed items (at most recentItems and
// recentBytes), shared by its streams, so that a stream that has caught up takes new
// items from memory instead of reading them back from the store.
type notifier struct {
	mu      sync.Mutex
	max     int
	watches map[string]*watch // app 0 identity
}

type watch struct {
	streams int
	latest  uint64
	changed chan struct{}
	// recent are the latest items, with consecutive sequences, the last at latest (or
	// none); their envelopes and payloads add up to recentSize bytes.
	recent     []InboxItem
	recentSize int
}

// Bounds of watch.recent.
const (
	recentItems = 64
	recentBytes = 1 << 20
)

func newNotifier(maxStreams int) *notifier {
	return &notifier{max: maxStreams, watches: map[string]*watch{}}
}

// open registers a stream of an identity, unless it has the maximum open already.
func (n *notifier) open(app, identity string) (*watch, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := key2(app, identity)
	w := n.watches[k]
	if w == nil {
		w = &watch{changed: make(chan struct{})}
		n.watches[k] = w
	}
	if w.streams >= n.max {
		return nil, errs.Exhaustedf("you have %d streams open already, the maximum: close one (each device needs only one)", n.max)
	}
	w.streams++
	return w, nil
}

// close unregisters a stream that open registered.
func (n *notifier) close(app, identity string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := key2(app, identity)
	if w := n.watches[k]; w != nil {
		if w.streams--; w.streams == 0 {
			delete(n.watches, k)
		}
	}
}

// state returns the latest inbox sequence the notifier knows of and the channel that
// the next change closes.
func (n *notifier) state(w *watch) (uint64, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return w.latest, w.changed
}

// bump records inboxes' new latest sequences; the committer calls it after commit.
func (n *notifier) bump(heads []InboxHead) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.watches) == 0 {
		return
	}
	for _, h := range heads {
		w := n.watches[key2(h.AppID, h.Identity)]
		if w == nil || h.Head <= w.latest {
			continue
		}
		w.latest = h.Head
		w.remember(h.Items)
		close(w.changed)
		w.changed = make(chan struct{})
	}
}

// remember adds a batch's new items to w.recent, dropping the oldest beyond the bounds.
// Items that do not follow on from w.recent (or none, from a store that does not hand
// them over) replace it.
func (w *watch) remember(items []InboxItem) {
	if len(items) == 0 || items[len(items)-1].Sequence != w.latest {
		w.recent, w.recentSize = nil, 0
		return
	}
	if n := len(w.recent); n > 0 && w.recent[n-1].Sequence+1 != items[0].Sequence {
		w.recent, w.recentSize = nil, 0
	}
	for _, it := range items {
		w.recent = append(w.recent, it)
		w.recentSize += it.size()
	}
	for len(w.recent) > recentItems || len(w.recent) > 1 && w.recentSize > recentBytes {
		w.recentSize -= w.recent[0].size()
		w.recent[0] = InboxItem{} // let the record go
		w.recent = w.recent[1:]
	}
}

// since returns the items after the inbox sequence after, when memory has all of them
// up to the latest; otherwise nil (read the store). The records are shared: read only.
func (n *notifier) since(w *watch, after uint64) []InboxItem {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(w.recent) == 0 || after >= w.latest || w.recent[0].Sequence > after+1 {
		return nil
	}
	return slices.Clone(w.recent[after+1-w.recent[0].Sequence:])
}
