package messaging

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// TestSendStreamKeepsOrderWhenABatchFails: one batch fails in storage (an I/O error
// here; a database connection lost or timed out with PostgreSQL) while later requests
// of the same stream wait for the next batch, which succeeds. Each round stores its
// first request alone, then fails the commit of its second while the rest queue. Those later requests must
// not be stored: the client resends from the first request without a reply, and a
// message stored after one that was not would land before it. So what is stored of the
// stream is always a prefix of its requests, and the resent ones follow in order.
func TestSendStreamKeepsOrderWhenABatchFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{SendRate: 1e6, SendBurst: 1e6}, quiet: true})
	alice, bob := e.aliceAndBob(t)
	const rounds = 5
	for r := range rounds {
		req := func(i int) *messagingv1.SendStreamRequest {
			return &messagingv1.SendStreamRequest{Send: alice.sendReq(bob.identity, fmt.Sprintf("r%02d-%02d", r, i), body(i))}
		}
		s := e.openSendStream(t, alice)
		// The round's first request is stored, alone.
		if err := s.Send(req(0)); err != nil {
			t.Fatal(err)
		}
		if resp, err := s.Recv(); err != nil || resp.GetSent() == nil {
			t.Fatalf("round %d: the first request: %v %v", r, resp, err)
		}
		// The next commit, the second request's alone, fails once it has let the
		// stream's later requests queue behind it, for the next batch.
		entered, release := make(chan struct{}), make(chan struct{})
		var commits atomic.Int32
		e.store.DB().FailCommits(func() error {
			if commits.Add(1) == 1 {
				close(entered)
				select {
				case <-release:
				case <-time.After(10 * time.Second):
				}
				return syscall.EIO
			}
			return nil
		})
		if err := s.Send(req(1)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: the second request was never committed", r)
		}
		for i := 2; i < SendStreamWindow; i++ {
			if s.Send(req(i)) != nil {
				break
			}
		}
		time.Sleep(20 * time.Millisecond) // the later requests reach the committer's queue
		close(release)
		s.CloseSend()
		for {
			resp, err := s.Recv()
			if err != nil {
				break
			}
			if resp.GetSent() == nil {
				t.Fatalf("round %d: reply %v", r, resp)
			}
		}
		e.store.DB().FailCommits(nil)
		// The committer answers in order: once this is stored, so is all that was queued.
		e.send(t, alice, bob.identity, fmt.Sprintf("last-%02d", r), "last")
	}
	stored := storedPrefixes(t, e.history(t, bob, alice.identity))
	for r := range rounds {
		if stored[r] != 1 {
			t.Errorf("round %d: %d of its requests stored, want the first alone (stored per round: %v)", r, stored[r], stored)
		}
	}
	t.Logf("stored per round: %v", stored)
}
