package messaging

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// TestDeliveryCacheStaysWithinBudget: hundreds of live subscribers receiving 16 KiB
// messages, in rounds with more subscribers each time. Every subscriber gets every
// message once, in order, and what the notifier keeps in memory for them stays within
// Config.DeliveryCacheBytes however many subscribers there are (without the budget each
// identity kept up to 1 MiB: here 300 x 3 x 16 KiB).
func TestDeliveryCacheStaysWithinBudget(t *testing.T) {
	const (
		budget   = 1 << 20
		envelope = 16 << 10
		perRound = 3
	)
	e := newEnv(t, envOptions{quiet: true, cfg: Config{SendRate: 1e6, SendBurst: 1 << 20, DeliveryCacheBytes: budget}})
	a := e.newApp(t)
	sender := e.newUsers(t, a, "sender")[0]
	var receivers []*liveReceiver
	for round, total := range []int{50, 150, 300} {
		var uids []string
		for i := len(receivers); i < total; i++ {
			uids = append(uids, fmt.Sprint("receiver", i))
		}
		for _, u := range e.newUsers(t, a, uids...) {
			receivers = append(receivers, e.liveReceiver(t, u))
		}
		// Each receiver gets perRound messages, sent by 8 goroutines.
		var wg sync.WaitGroup
		next := make(chan *liveReceiver)
		for range 8 {
			wg.Go(func() {
				for r := range next {
					for j := range perRound {
						body := fmt.Sprintf("%s/%d/%d/", r.u.identity, round, j) + strings.Repeat("x", envelope)
						if _, err := e.client.Send(sender.ctx(), sender.sendReq(r.u.identity, fmt.Sprint(r.u.identity, "-", round, "-", j), body[:envelope])); err != nil {
							t.Error(err)
						}
					}
				}
			})
		}
		for _, r := range receivers {
			next <- r
		}
		close(next)
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		for _, r := range receivers {
			r.want += perRound
			r.waitFor(t)
		}
		held, recs := e.srv.notify.cachedBytes()
		if walked := heldBytes(e.srv.notify); walked != held {
			t.Errorf("round %d: the cache accounts %d bytes, the watches keep %d", round, held, walked)
		}
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		t.Logf("%d subscribers: %d records, %d bytes kept for delivery (budget %d); live heap %d MiB", total, recs, held, budget, ms.HeapAlloc>>20)
		if held > budget {
			t.Fatalf("%d subscribers: %d bytes kept for delivery, over the budget of %d", total, held, budget)
		}
	}
	checkRuns(t, e.srv.notify)
}

// liveReceiver reads a Subscribe stream in the background and checks that its items
// come in order, each once.
type liveReceiver struct {
	u    user
	want int // messages sent to it so far

	mu   sync.Mutex
	got  int
	last uint64
	err  error
	more chan struct{} // signalled at each message
}

func (e *env) liveReceiver(t *testing.T, u user) *liveReceiver {
	t.Helper()
	ctx, cancel := context.WithCancel(u.ctx())
	t.Cleanup(cancel)
	stream, err := e.client.Subscribe(ctx, &messagingv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := stream.Recv(); err != nil || first.GetHeartbeat() == nil {
		t.Fatalf("first item %v, %v: want the caught-up heartbeat", first, err)
	}
	r := &liveReceiver{u: u, more: make(chan struct{}, 1)}
	go func() {
		for {
			it, err := stream.Recv()
			r.mu.Lock()
			switch {
			case err != nil:
				r.err = err
			case it.GetMessage() != nil:
				if it.GetInboxSequence() != r.last+1 || !strings.HasPrefix(string(it.GetMessage().GetEnvelope()), u.identity+"/") {
					r.err = fmt.Errorf("item at inbox sequence %d after %d, envelope %.40q", it.GetInboxSequence(), r.last, it.GetMessage().GetEnvelope())
				}
				r.last = it.GetInboxSequence()
				r.got++
			}
			r.mu.Unlock()
			select {
			case r.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

// waitFor waits until the receiver has the messages it wants.
func (r *liveReceiver) waitFor(t *testing.T) {
	n := r.want
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		got, err := r.got, r.err
		r.mu.Unlock()
		switch {
		case err != nil:
			t.Fatalf("%s: %v", r.u.identity, err)
		case got > n:
			t.Fatalf("%s: %d messages, want %d", r.u.identity, got, n)
		case got == n:
			return
		}
		select {
		case <-r.more:
		case <-deadline:
			t.Fatalf("%s: %d messages of %d after 20s", r.u.identity, got, n)
		}
	}
}
