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
// of the same stream wait for the next batch, which succeeds. Those later requests must
// not be stored: the client resends from the first request without a reply, and a
// message stored after one that was not would land before it. So what is stored of the
// stream is always a prefix of its requests, and the resent ones follow in order.
func TestSendStreamKeepsOrderWhenABatchFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{SendRate: 1e6, SendBurst: 1e6}, quiet: true})
	us := e.newUsers(t, e.newApp(t), "alice", "bob")
	alice, bob := us[0], us[1]
	const rounds = 20
	for r := range rounds {
		// The second commit from now fails, once, slowly: meanwhile the stream's later
		// requests queue behind it, for the next batch.
		var commits atomic.Int32
		e.store.DB().FailCommits(func() error {
			if commits.Add(1) == 2 {
				time.Sleep(20 * time.Millisecond)
				return syscall.EIO
			}
			return nil
		})
		s := e.openSendStream(t, alice)
		for i := range SendStreamWindow {
			if s.Send(&messagingv1.SendStreamRequest{Send: alice.sendReq(bob.identity, fmt.Sprintf("r%02d-%02d", r, i), body(i))}) != nil {
				break
			}
		}
		s.CloseSend()
		replied := 0
		for {
			resp, err := s.Recv()
			if err != nil {
				break
			}
			if resp.GetSent() == nil {
				t.Fatalf("round %d: reply %v", r, resp)
			}
			replied++
		}
		e.store.DB().FailCommits(nil)
		// The committer answers in order: once this is stored, so is all that was queued.
		e.send(t, alice, bob.identity, fmt.Sprintf("last-%02d", r), "last")
		if replied == SendStreamWindow {
			t.Logf("round %d: no commit failed (%d commits)", r, commits.Load())
		}
	}
	stored := map[int]int{} // round -> messages stored
	for _, m := range e.history(t, bob, alice.identity) {
		var r, i int
		if _, err := fmt.Sscanf(m.GetClientMessageId(), "r%02d-%02d", &r, &i); err != nil {
			continue
		}
		if i != stored[r] {
			t.Fatalf("round %d: request %d stored after %d of the round's requests: a request was stored after one that was not", r, i, stored[r])
		}
		stored[r]++
	}
	cut := 0
	for _, n := range stored {
		if n > 0 && n < SendStreamWindow {
			cut++
		}
	}
	if cut == 0 {
		t.Fatalf("no round had a failure after its first request and before its last (stored per round: %v): the test tested nothing", stored)
	}
	t.Logf("stored per round: %v", stored)
}
