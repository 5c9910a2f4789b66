package messaging

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

func seqs(ms []*messagingv1.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.GetSequence()
	}
	return out
}

// span returns from, from±1, ... to.
func span(from, to uint64) []uint64 {
	var out []uint64
	for i := from; ; {
		out = append(out, i)
		if i == to {
			return out
		}
		if from < to {
			i++
		} else {
			i--
		}
	}
}

func equalSeqs(a, b []uint64) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// TestHistoryPaging pages backwards and forwards, with tokens, through messages whose
// index entries are partly written down and partly still in memory.
func TestHistoryPaging(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{quiet: true, cfg: Config{SendRate: 1e6, SendBurst: 1e6}, store: StoreOptions{FlushEntries: 1 << 30, FlushAge: time.Hour}})
	us := e.newUsers(t, e.newApp(t), "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	var conv string
	for i := 1; i <= 120; i++ {
		conv = e.send(t, alice, bob.identity, fmt.Sprint(i), body(i)).GetConversationId()
		if i == 70 {
			e.flush(t) // 1..70 written down, 71..120 in memory
		}
	}
	page := func(req *messagingv1.HistoryRequest) *messagingv1.HistoryResponse {
		t.Helper()
		resp, err := e.client.History(bob.ctx(), req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetLatestSequence() != 120 || resp.GetConversationId() != conv {
			t.Fatalf("page of %s ending at %d", resp.GetConversationId(), resp.GetLatestSequence())
		}
		for _, m := range resp.GetMessages() {
			if string(m.GetEnvelope()) != body(int(m.GetSequence())) || m.GetSender() != alice.identity || m.GetExpiresAt() == nil {
				t.Fatalf("message %v", m)
			}
		}
		return resp
	}
	walk := func(first *messagingv1.HistoryRequest, want ...[]uint64) {
		t.Helper()
		req := first
		for i, w := range want {
			resp := page(req)
			if !equalSeqs(seqs(resp.GetMessages()), w) {
				t.Fatalf("page %d: %v, want %v", i, seqs(resp.GetMessages()), w)
			}
			if (resp.GetNextPageToken() == "") != (i == len(want)-1) {
				t.Fatalf("page %d: next_page_token %q", i, resp.GetNextPageToken())
			}
			req = &messagingv1.HistoryRequest{ConversationId: alice.identity, PageToken: resp.GetNextPageToken(), PageSize: first.GetPageSize(), AfterSequence: ptr(uint64(999))}
		}
	}
	t.Run("backwards from the latest", func(t *testing.T) {
		walk(&messagingv1.HistoryRequest{ConversationId: alice.identity}, span(120, 71), span(70, 21), span(20, 1))
	})
	t.Run("forwards from the start", func(t *testing.T) {
		walk(&messagingv1.HistoryRequest{ConversationId: conv, AfterSequence: ptr(uint64(0)), PageSize: 45}, span(1, 45), span(46, 90), span(91, 120))
	})
	t.Run("forwards from the middle", func(t *testing.T) {
		walk(&messagingv1.HistoryRequest{ConversationId: conv, AfterSequence: ptr(uint64(65)), PageSize: 10}, span(66, 75), span(76, 85), span(86, 95), span(96, 105), span(106, 115), span(116, 120))
	})
	t.Run("backwards from before", func(t *testing.T) {
		walk(&messagingv1.HistoryRequest{ConversationId: conv, BeforeSequence: ptr(uint64(75)), PageSize: 3}, span(74, 72), span(71, 69), span(68, 66), span(65, 63), span(62, 60), span(59, 57), span(56, 54), span(53, 51),
			span(50, 48), span(47, 45), span(44, 42), span(41, 39), span(38, 36), span(35, 33), span(32, 30), span(29, 27), span(26, 24), span(23, 21), span(20, 18), span(17, 15), span(14, 12), span(11, 9), span(8, 6), span(5, 3), span(2, 1))
	})
	t.Run("edges", func(t *testing.T) {
		if r := page(&messagingv1.HistoryRequest{ConversationId: conv, AfterSequence: ptr(uint64(120))}); len(r.GetMessages()) != 0 || r.GetNextPageToken() != "" {
			t.Errorf("after the latest: %v", r)
		}
		if r := page(&messagingv1.HistoryRequest{ConversationId: conv, BeforeSequence: ptr(uint64(121)), PageSize: 1}); !equalSeqs(seqs(r.GetMessages()), []uint64{120}) {
			t.Errorf("before latest+1: %v", seqs(r.GetMessages()))
		}
		if r := page(&messagingv1.HistoryRequest{ConversationId: conv, BeforeSequence: ptr(uint64(1))}); len(r.GetMessages()) != 0 || r.GetNextPageToken() != "" {
			t.Errorf("before the first: %v", r)
		}
		resp, err := e.client.History(alice.ctx(), &messagingv1.HistoryRequest{ConversationId: carol.identity})
		if err != nil || len(resp.GetMessages()) != 0 || resp.GetLatestSequence() != 0 || !strings.HasPrefix(resp.GetConversationId(), "d_") {
			t.Errorf("a conversation not started: %v, %v", resp, err)
		}
	})
	otherConv := e.send(t, carol, alice.identity, "c", "c").GetConversationId()
	cases := []struct {
		name string
		u    user
		req  *messagingv1.HistoryRequest
		code codes.Code
		msg  string
	}{
		{"after beyond the latest", bob, &messagingv1.HistoryRequest{ConversationId: conv, AfterSequence: ptr(uint64(121))}, codes.InvalidArgument, "after_sequence 121 is beyond the conversation's latest sequence 120"},
		{"before beyond latest+1", bob, &messagingv1.HistoryRequest{ConversationId: conv, BeforeSequence: ptr(uint64(122))}, codes.InvalidArgument, "before_sequence 122 is beyond"},
		{"both directions", bob, &messagingv1.HistoryRequest{ConversationId: conv, AfterSequence: ptr(uint64(1)), BeforeSequence: ptr(uint64(5))}, codes.InvalidArgument, "both set"},
		{"page too large", bob, &messagingv1.HistoryRequest{ConversationId: conv, PageSize: 501}, codes.InvalidArgument, "over the maximum 500"},
		{"garbage token", bob, &messagingv1.HistoryRequest{ConversationId: conv, PageToken: "not a token"}, codes.InvalidArgument, "page_token is malformed"},
		{"another conversation's token", alice, &messagingv1.HistoryRequest{ConversationId: otherConv, PageToken: historyToken(conv, historyCursor{from: 50})}, codes.InvalidArgument, "another conversation"},
		{"non-participant", carol, &messagingv1.HistoryRequest{ConversationId: conv}, codes.PermissionDenied, "take part in no conversation"},
		{"unknown conversation", bob, &messagingv1.HistoryRequest{ConversationId: "d_" + strings.Repeat("q", 32)}, codes.PermissionDenied, "take part in no conversation"},
		{"self", bob, &messagingv1.HistoryRequest{ConversationId: bob.identity}, codes.InvalidArgument, "your own identity"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.History(tc.u.ctx(), tc.req)
			wantCode(t, err, tc.code, tc.msg)
		})
	}
}

// TestHistoryByteCap: a page stops at 2 MiB of envelopes.
func TestHistoryByteCap(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{quiet: true})
	us := e.newUsers(t, e.newApp(t), "alice", "bob")
	big := strings.Repeat("b", 200<<10)
	for i := range 12 {
		e.send(t, us[0], us[1].identity, fmt.Sprint(i), big)
	}
	resp, err := e.client.History(us[1].ctx(), &messagingv1.HistoryRequest{ConversationId: us[0].identity})
	if err != nil {
		t.Fatal(err)
	}
	if !equalSeqs(seqs(resp.GetMessages()), span(12, 3)) || resp.GetNextPageToken() == "" {
		t.Fatalf("first page: %v (token %q); want 12..3, as 11 envelopes are over 2 MiB", seqs(resp.GetMessages()), resp.GetNextPageToken())
	}
	resp, err = e.client.History(us[1].ctx(), &messagingv1.HistoryRequest{ConversationId: us[0].identity, PageToken: resp.GetNextPageToken()})
	if err != nil || !equalSeqs(seqs(resp.GetMessages()), span(2, 1)) || resp.GetNextPageToken() != "" {
		t.Fatalf("second page: %v, %v", resp, err)
	}
}

// TestCursors: cursors only move forwards, read moves delivered, values above the
// latest sequence are refused, and a peer sees the other's cursors.
func TestCursors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	us := e.newUsers(t, e.newApp(t), "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	var conv string
	for i := 1; i <= 5; i++ {
		conv = e.send(t, alice, bob.identity, fmt.Sprint(i), body(i)).GetConversationId()
	}
	update := func(delivered, read, wantDelivered, wantRead uint64) {
		t.Helper()
		e.clock.Add(time.Second)
		resp, err := e.client.UpdateCursors(bob.ctx(), &messagingv1.UpdateCursorsRequest{ConversationId: alice.identity, DeliveredSequence: delivered, ReadSequence: read})
		if err != nil {
			t.Fatal(err)
		}
		c := resp.GetCursor()
		if resp.GetConversationId() != conv || c.GetIdentity() != bob.identity || c.GetDeliveredSequence() != wantDelivered || c.GetReadSequence() != wantRead || c.GetUpdatedAt() == nil {
			t.Fatalf("update(%d, %d) = %v; want delivered %d, read %d", delivered, read, resp, wantDelivered, wantRead)
		}
	}
	update(3, 0, 3, 0)
	update(0, 2, 3, 2)
	update(1, 1, 3, 2) // backwards: ignored
	update(0, 5, 5, 5) // read moves delivered
	before := e.snapshot(t)
	for _, tc := range []struct {
		name string
		u    user
		req  *messagingv1.UpdateCursorsRequest
		code codes.Code
		msg  string
	}{
		{"delivered above the latest", bob, &messagingv1.UpdateCursorsRequest{ConversationId: conv, DeliveredSequence: 6}, codes.InvalidArgument, "delivered_sequence 6 is above the conversation's latest sequence 5"},
		{"read above the latest", bob, &messagingv1.UpdateCursorsRequest{ConversationId: conv, ReadSequence: 9}, codes.InvalidArgument, "read_sequence 9"},
		{"non-participant", carol, &messagingv1.UpdateCursorsRequest{ConversationId: conv, ReadSequence: 1}, codes.PermissionDenied, "take part in no conversation"},
		{"conversation not started", carol, &messagingv1.UpdateCursorsRequest{ConversationId: alice.identity, ReadSequence: 1}, codes.InvalidArgument, "latest sequence 0"},
	} {
		_, err := e.client.UpdateCursors(tc.u.ctx(), tc.req)
		wantCode(t, err, tc.code, tc.msg)
	}
	if !maps.Equal(before, e.snapshot(t)) {
		t.Error("refused cursor updates changed the store")
	}
	resp, err := e.client.GetCursors(alice.ctx(), &messagingv1.GetCursorsRequest{ConversationId: conv})
	if err != nil {
		t.Fatal(err)
	}
	cs := resp.GetCursors()
	if len(cs) != 2 || cs[0].GetIdentity() != alice.identity || cs[0].GetReadSequence() != 0 || cs[0].GetUpdatedAt() != nil ||
		cs[1].GetIdentity() != bob.identity || cs[1].GetReadSequence() != 5 || cs[1].GetDeliveredSequence() != 5 {
		t.Errorf("alice's view of the cursors: %v", cs)
	}
	_, err = e.client.GetCursors(carol.ctx(), &messagingv1.GetCursorsRequest{ConversationId: conv})
	wantCode(t, err, codes.PermissionDenied, "take part in no conversation")
	// Zero values read the cursor without writing.
	before = e.snapshot(t)
	if r, err := e.client.UpdateCursors(bob.ctx(), &messagingv1.UpdateCursorsRequest{ConversationId: conv}); err != nil || r.GetCursor().GetReadSequence() != 5 {
		t.Errorf("empty update: %v, %v", r, err)
	}
	if !maps.Equal(before, e.snapshot(t)) {
		t.Error("an empty update wrote")
	}
}

// TestListConversations pages through the caller's conversations in id order.
func TestListConversations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t)
	us := e.newUsers(t, a, "alice", "p0", "p1", "p2", "p3", "p4")
	alice, peers := us[0], us[1:]
	want := map[string]string{} // conversation -> peer
	for i, p := range peers {
		for j := 0; j <= i; j++ {
			r := e.send(t, p, alice.identity, fmt.Sprint(j), body(j))
			want[r.GetConversationId()] = p.identity
		}
	}
	if _, err := e.client.UpdateCursors(alice.ctx(), &messagingv1.UpdateCursorsRequest{ConversationId: peers[4].identity, ReadSequence: 2}); err != nil {
		t.Fatal(err)
	}
	var got []*messagingv1.Conversation
	req := &messagingv1.ListConversationsRequest{PageSize: 2}
	for pages := 0; ; pages++ {
		resp, err := e.client.ListConversations(alice.ctx(), req)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.GetConversations()...)
		if resp.GetNextPageToken() == "" {
			if pages != 2 {
				t.Errorf("%d pages of 2 for 5 conversations", pages+1)
			}
			break
		}
		req = &messagingv1.ListConversationsRequest{PageSize: 2, PageToken: resp.GetNextPageToken()}
	}
	if len(got) != len(want) {
		t.Fatalf("%d conversations listed, want %d", len(got), len(want))
	}
	for i, c := range got {
		if i > 0 && c.GetConversationId() <= got[i-1].GetConversationId() {
			t.Errorf("not in id order: %s after %s", c.GetConversationId(), got[i-1].GetConversationId())
		}
		peer := want[c.GetConversationId()]
		n := 0
		for k, p := range peers {
			if p.identity == peer {
				n = k + 1
			}
		}
		if c.GetKind() != messagingv1.ConversationKind_CONVERSATION_KIND_DIRECT || c.GetPeer() != peer || c.GetLatestSequence() != uint64(n) ||
			c.GetLatestMessageAt() == nil || c.GetCursor().GetIdentity() != alice.identity {
			t.Errorf("conversation %v; want peer %s at %d", c, peer, n)
		}
		if peer == peers[4].identity && c.GetCursor().GetReadSequence() != 2 {
			t.Errorf("cursor %v; want read 2", c.GetCursor())
		}
	}
	for _, tc := range []struct {
		name string
		req  *messagingv1.ListConversationsRequest
		msg  string
	}{
		{"page too large", &messagingv1.ListConversationsRequest{PageSize: 1001}, "over the maximum 1000"},
		{"garbage token", &messagingv1.ListConversationsRequest{PageToken: "!!"}, "page_token is malformed"},
	} {
		_, err := e.client.ListConversations(alice.ctx(), tc.req)
		wantCode(t, err, codes.InvalidArgument, tc.msg)
	}
	resp, err := e.client.ListConversations(e.newUsers(t, a, "loner")[0].ctx(), &messagingv1.ListConversationsRequest{})
	if err != nil || len(resp.GetConversations()) != 0 || resp.GetNextPageToken() != "" {
		t.Errorf("no conversations: %v, %v", resp, err)
	}
}
