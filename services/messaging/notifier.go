package messaging

import (
	"sync"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// notifier wakes the streams of an identity when its inbox grows. It keeps, per (app,
// identity) with an open stream, the latest inbox sequence and a channel that is closed
// (and replaced) at every change: a stream takes the channel, reads the store, and
// waits on the channel only if it found nothing new, so no change is missed and any
// number of changes while it was busy wake it once. Nothing is queued per stream: a
// slow stream reads what it missed from the store.
type notifier struct {
	mu      sync.Mutex
	max     int
	watches map[string]*watch // app 0 identity
}

type watch struct {
	streams int
	latest  uint64
	changed chan struct{}
}

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
		close(w.changed)
		w.changed = make(chan struct{})
	}
}
