package messaging

import (
	"fmt"
	"io/fs"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// TestSendOnAFullDisk: a send whose commit fails for lack of space answers UNAVAILABLE,
// saying storage is full and that a retry with the same client_message_id is safe, on
// Send and on a SendStream (which ends, for the client to resend); for fullPause after
// such a failure, sends are refused the same way without another try of the disk; once
// there is room the retry is stored once.
func TestSendOnAFullDisk(t *testing.T) {
	e := newEnv(t, envOptions{})
	alice, bob := e.aliceAndBob(t)
	var commits atomic.Int32
	e.store.DB().FailCommits(func() error {
		commits.Add(1)
		return &fs.PathError{Op: "write", Path: e.store.DB().Path(), Err: syscall.ENOSPC}
	})
	const full = "storage is full: this message was not stored; retrying it later with the same client_message_id is safe"

	_, err := e.client.Send(alice.ctx(), alice.sendReq(bob.identity, "m-1", "one"))
	wantCode(t, err, codes.Unavailable, full)
	tries := commits.Load()
	if tries == 0 {
		t.Fatal("no commit was tried")
	}
	for i := range 10 {
		_, err := e.client.Send(alice.ctx(), alice.sendReq(bob.identity, fmt.Sprintf("m-%d", i+2), "more"))
		wantCode(t, err, codes.Unavailable, full)
	}
	if got := commits.Load(); got != tries {
		t.Errorf("%d more commits tried within %s of a full disk; want none", got-tries, fullPause)
	}
	s := e.openSendStream(t, alice)
	if err := s.Send(&messagingv1.SendStreamRequest{Send: alice.sendReq(bob.identity, "m-1", "one")}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Recv()
	wantCode(t, err, codes.Unavailable, full)

	e.store.DB().FailCommits(nil)
	time.Sleep(fullPause)
	resp := e.send(t, alice, bob.identity, "m-1", "one")
	if resp.GetSequence() != 1 || resp.GetDuplicate() {
		t.Errorf("retry once there is room: sequence %d, duplicate %v; want 1, stored once", resp.GetSequence(), resp.GetDuplicate())
	}
	if h := e.history(t, bob, resp.GetConversationId()); len(h) != 1 {
		t.Errorf("%d messages stored, want the retried one only", len(h))
	}
}
