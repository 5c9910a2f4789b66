package messaging

import (
	"container/list"
	"slices"
	"strings"
	"sync"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
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
// items from memory instead of reading them back from the store. What all identities
// keep together is bounded by a byte budget for the whole process (Config.
// DeliveryCacheBytes): past it the oldest committed items are forgotten, whichever
// identities keep them, and a stream that needs them reads the store as it would
// without the cache. Correctness never depends on what is kept.
type notifier struct {
	mu      sync.Mutex
	max     int
	watches map[string]*watch // app 0 identity
	cache   recentCache
}

type watch struct {
	streams int
	latest  uint64
	changed chan struct{}
	// recent are the latest items, with consecutive sequences, the last at latest (or
	// none); their envelopes and payloads add up to recentSize bytes. Every record in
	// it is accounted for in the notifier's cache.
	recent     []InboxItem
	recentSize int
}

// DefaultDeliveryCacheBytes is Config.DeliveryCacheBytes's default: the recent items
// kept in memory for live delivery, all streams together.
const DefaultDeliveryCacheBytes = 64 << 20

// Bounds of watch.recent.
const (
	recentItems = 64
	recentBytes = 1 << 20
)

// recentCache accounts for the records that the watches keep, across all of them, in
// the order they were committed. A record counts once however many watches keep it (a
// group message is one record in every member's inbox), for its envelope or payload
// plus recordOverhead.
type recentCache struct {
	budget int64
	bytes  int64
	order  list.List // of *cachedRecord, the oldest at the front
	byRec  map[*messagingstoragev1.MessagingLogRecord]*list.Element
}

// cachedRecord is one record kept by refs watches. holders are the watches it was
// given to, some of which may have let it go since.
type cachedRecord struct {
	rec     *messagingstoragev1.MessagingLogRecord
	size    int64
	refs    int
	holders []*watch
}

// recordOverhead is what a record costs in memory beyond its envelope or payload: its
// ids, timestamps and inline fan-out, and the cache's own bookkeeping.
const recordOverhead = 512

func newNotifier(maxStreams int, cacheBytes int64) *notifier {
	return &notifier{
		max:     maxStreams,
		watches: map[string]*watch{},
		cache:   recentCache{budget: max(cacheBytes, 0), byRec: map[*messagingstoragev1.MessagingLogRecord]*list.Element{}},
	}
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
			n.forget(w, len(w.recent))
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

// watched returns the inboxes with an open stream and their latest sequences, for
// Store.Watch.
func (n *notifier) watched() []InboxHead {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]InboxHead, 0, len(n.watches))
	for k, w := range n.watches {
		app, identity, _ := strings.Cut(k, "\x00")
		out = append(out, InboxHead{AppID: app, Identity: identity, Head: w.latest})
	}
	return out
}

// bump records inboxes' new latest sequences; the committer calls it after commit, and
// Store.Watch of other replicas' commits (with their items when it read them all, in
// one statement for every inbox of a wake-up; otherwise without).
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
		n.remember(w, h.Items)
		close(w.changed)
		w.changed = make(chan struct{})
	}
	n.evict()
}

// remember adds a batch's new items to w.recent, dropping the oldest beyond the bounds.
// Items that do not follow on from w.recent (or none, from a store that does not hand
// them over) replace it; so does an item larger than the whole budget, which is not
// kept.
func (n *notifier) remember(w *watch, items []InboxItem) {
	if len(items) == 0 || items[len(items)-1].Sequence != w.latest {
		n.forget(w, len(w.recent))
		return
	}
	if k := len(w.recent); k > 0 && w.recent[k-1].Sequence+1 != items[0].Sequence {
		n.forget(w, k)
	}
	for _, it := range items {
		if int64(it.Size())+recordOverhead > n.cache.budget {
			n.forget(w, len(w.recent))
			continue
		}
		w.recent = append(w.recent, it)
		w.recentSize += it.Size()
		n.cache.hold(it.Record, int64(it.Size())+recordOverhead, w)
	}
	for len(w.recent) > recentItems || len(w.recent) > 1 && w.recentSize > recentBytes {
		n.forget(w, 1)
	}
}

// forget drops the oldest k items of w.recent.
func (n *notifier) forget(w *watch, k int) {
	for i := range k {
		w.recentSize -= w.recent[i].Size()
		n.cache.release(w.recent[i].Record)
		w.recent[i] = InboxItem{} // let the record go
	}
	w.recent = w.recent[k:]
	if len(w.recent) == 0 {
		w.recent, w.recentSize = nil, 0
	}
}

// evict forgets the oldest records until the cache is within its budget. A record is
// dropped from every watch that keeps it, with the older items before it, so that what
// a watch keeps stays a run that ends at its latest sequence.
func (n *notifier) evict() {
	for n.cache.bytes > n.cache.budget {
		e := n.cache.order.Front()
		c := e.Value.(*cachedRecord)
		for _, w := range c.holders {
			if i := slices.IndexFunc(w.recent, func(it InboxItem) bool { return it.Record == c.rec }); i >= 0 {
				n.forget(w, i+1)
			}
		}
		if n.cache.byRec[c.rec] == e { // every holder has let it go; this is a safeguard
			n.cache.drop(e)
		}
	}
}

// hold counts one more watch keeping rec, of size bytes.
func (c *recentCache) hold(rec *messagingstoragev1.MessagingLogRecord, size int64, w *watch) {
	e, ok := c.byRec[rec]
	if !ok {
		e = c.order.PushBack(&cachedRecord{rec: rec, size: size})
		c.byRec[rec] = e
		c.bytes += size
	}
	cr := e.Value.(*cachedRecord)
	cr.refs++
	cr.holders = append(cr.holders, w)
}

// release counts one watch fewer keeping rec, and forgets it when none does.
func (c *recentCache) release(rec *messagingstoragev1.MessagingLogRecord) {
	e, ok := c.byRec[rec]
	if !ok {
		return
	}
	cr := e.Value.(*cachedRecord)
	if cr.refs--; cr.refs <= 0 {
		c.drop(e)
	}
}

func (c *recentCache) drop(e *list.Element) {
	cr := e.Value.(*cachedRecord)
	c.bytes -= cr.size
	delete(c.byRec, cr.rec)
	c.order.Remove(e)
}

// cachedBytes returns the bytes the cache accounts for, and how many records.
func (n *notifier) cachedBytes() (int64, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cache.bytes, len(n.cache.byRec)
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
