package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// TestMessagesSurviveSIGKILL sends under concurrent load through the real binary (with
// Send, and with SendStream several messages ahead), kills the server with SIGKILL
// mid-run, restarts it on the same data, and proves that every acknowledged message is
// stored exactly once, in order, and that a subscriber resumes from its cursor without
// a gap or a duplicate.
func TestMessagesSurviveSIGKILL(t *testing.T) {
	bin := e2eBinary(t)
	dataDir := filepath.Join(t.TempDir(), "umbra-data")
	grpcPort, httpPort := e2eFreePorts(t)
	p := e2eStartDev(t, bin, dataDir, grpcPort, httpPort)
	e2eAllowPlaintext(t, p)
	addr := fmt.Sprintf("127.0.0.1:%d", grpcPort)

	const senders = 8
	uids := []string{"reader"}
	for i := range senders {
		uids = append(uids, fmt.Sprintf("sender-%d", i))
	}
	ids := e2eResolve(t, p, uids...)
	reader := ids["reader"]
	tokens := map[string]string{}
	for _, uid := range uids {
		tokens[uid] = e2eIssue(t, p, ids[uid])
	}
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := messagingv1.NewMessagingServiceClient(conn)
	as := func(uid string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tokens[uid])
	}

	// The reader subscribes from the start and records its inbox cursor.
	var (
		mu       sync.Mutex
		received []uint64 // inbox sequences before the kill
	)
	subCtx, stopSub := context.WithCancel(as("reader"))
	defer stopSub()
	zero := uint64(0)
	stream, err := client.Subscribe(subCtx, &messagingv1.SubscribeRequest{AfterInboxSequence: &zero})
	if err != nil {
		t.Fatal(err)
	}
	subDone := make(chan struct{})
	go func() {
		defer close(subDone)
		for {
			item, err := stream.Recv()
			if err != nil {
				return
			}
			if item.GetMessage() != nil {
				mu.Lock()
				received = append(received, item.GetInboxSequence())
				mu.Unlock()
			}
		}
	}()

	// Senders send, each to the reader, until the server dies: the even ones one at a
	// time with Send, the odd ones over a SendStream with up to streamWindow messages
	// ahead of their replies. Each remembers what was acknowledged, in order, and what
	// was in flight at the kill.
	const streamWindow = 8
	acked := make([][]sentMsg, senders)
	inFlight := make([][]string, senders)
	var ackedTotal atomic.Int64
	request := func(cmid string) *messagingv1.SendRequest {
		return &messagingv1.SendRequest{
			ConversationId:  reader,
			ClientMessageId: cmid,
			Header:          &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
			Envelope:        []byte(cmid),
		}
	}
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() {
			uid := fmt.Sprintf("sender-%d", i)
			if i%2 == 0 {
				for n := 0; ; n++ {
					cmid := fmt.Sprintf("%s-%05d", uid, n)
					inFlight[i] = []string{cmid}
					resp, err := client.Send(as(uid), request(cmid))
					if err != nil {
						return // the server is gone
					}
					inFlight[i] = nil
					acked[i] = append(acked[i], sentMsg{cmid, resp.GetSequence()})
					ackedTotal.Add(1)
				}
			}
			ss, err := client.SendStream(as(uid))
			if err != nil {
				return
			}
			for n := 0; ; {
				for ; len(inFlight[i]) < streamWindow; n++ {
					cmid := fmt.Sprintf("%s-%05d", uid, n)
					inFlight[i] = append(inFlight[i], cmid)
					if ss.Send(&messagingv1.SendStreamRequest{Send: request(cmid)}) != nil {
						return
					}
				}
				resp, err := ss.Recv()
				if err != nil {
					return
				}
				if resp.GetClientMessageId() != inFlight[i][0] || resp.GetSent() == nil {
					t.Errorf("%s: reply %v; want %s stored", uid, resp, inFlight[i][0])
					return
				}
				acked[i] = append(acked[i], sentMsg{inFlight[i][0], resp.GetSent().GetSequence()})
				inFlight[i] = inFlight[i][1:]
				ackedTotal.Add(1)
			}
		})
	}
	// Kill once a fair amount is acknowledged.
	deadline := time.Now().Add(20 * time.Second)
	for ackedTotal.Load() < 400 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	wg.Wait()
	<-subDone
	total := int(ackedTotal.Load())
	if total < 50 {
		t.Fatalf("only %d messages acknowledged before the kill; the test needs load", total)
	}

	p = e2eStartDev(t, bin, dataDir, grpcPort, httpPort)
	defer p.stop(t)
	// A client reconnects after the restart: the old connection may still be waiting
	// out its reconnection back-off, and fails calls fast meanwhile.
	conn, err = grpcclient.Dial(grpcclient.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client = messagingv1.NewMessagingServiceClient(conn)

	// Every acknowledged message is there exactly once, in order, at its sequence;
	// retrying, in order, those in flight stores each at most once.
	for i := range senders {
		uid := fmt.Sprintf("sender-%d", i)
		for _, cmid := range inFlight[i] {
			resp, err := client.Send(as(uid), request(cmid))
			if err != nil {
				t.Fatalf("retry of %s after the restart: %v", cmid, err)
			}
			acked[i] = append(acked[i], sentMsg{cmid, resp.GetSequence()})
		}
		wantStoredAsAcked(t, uid, history(t, as(uid), client, reader), acked[i])
	}

	// The reader resumes from its last cursor: every later item, in order, none twice.
	mu.Lock()
	before := slices.Clone(received)
	mu.Unlock()
	for j, seq := range before {
		if seq != uint64(j+1) {
			t.Fatalf("before the kill the reader got inbox %d at position %d", seq, j)
		}
	}
	cursor := uint64(len(before))
	ctx, cancel := context.WithTimeout(as("reader"), 20*time.Second)
	defer cancel()
	resumed, err := client.Subscribe(ctx, &messagingv1.SubscribeRequest{AfterInboxSequence: &cursor})
	if err != nil {
		t.Fatal(err)
	}
	next := cursor + 1
	for {
		item, err := resumed.Recv()
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
			break
		}
		if err != nil {
			t.Fatalf("resumed stream: %v", err)
		}
		if hb := item.GetHeartbeat(); hb != nil {
			if hb.GetLatestInboxSequence() != next-1 {
				t.Fatalf("caught up at %d but the inbox goes to %d", next-1, hb.GetLatestInboxSequence())
			}
			break
		}
		if item.GetInboxSequence() != next {
			t.Fatalf("resumed stream gave inbox %d; want %d (no gap, no duplicate)", item.GetInboxSequence(), next)
		}
		next++
	}
	storedTotal := 0
	for i := range senders {
		storedTotal += len(acked[i])
	}
	if got := int(next - 1); got != storedTotal {
		t.Errorf("the reader's inbox holds %d messages; the senders stored %d", got, storedTotal)
	}
	retried := 0
	for _, f := range inFlight {
		retried += len(f)
	}
	t.Logf("%d messages acknowledged before SIGKILL, %d delivered live before it, %d in flight retried, all present once after the restart",
		total, len(before), retried)
}

// history pages through the messages the server holds of a conversation, from the
// first.
func history(t *testing.T, ctx context.Context, client messagingv1.MessagingServiceClient, conversation string) []*messagingv1.Message {
	t.Helper()
	var stored []*messagingv1.Message
	token := ""
	zero := uint64(0)
	for {
		req := &messagingv1.HistoryRequest{ConversationId: conversation, PageSize: 500, PageToken: token}
		if token == "" {
			req.AfterSequence = &zero
		}
		page, err := client.History(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, page.GetMessages()...)
		if token = page.GetNextPageToken(); token == "" {
			return stored
		}
	}
}

// wantStoredAsAcked fails t unless stored, uid's messages as the server holds them, are
// numbered from 1 without a gap, none twice, and are the messages acknowledged to uid,
// in order and at the sequences acknowledged.
func wantStoredAsAcked(t *testing.T, uid string, stored []*messagingv1.Message, acked []sentMsg) {
	t.Helper()
	if len(stored) != len(acked) {
		t.Errorf("%s: %d messages stored, %d acknowledged", uid, len(stored), len(acked))
	}
	seen := map[string]bool{}
	for j, m := range stored {
		if m.GetSequence() != uint64(j+1) {
			t.Fatalf("%s: stored message %d has sequence %d; want no gap", uid, j, m.GetSequence())
		}
		if seen[m.GetClientMessageId()] {
			t.Fatalf("%s: %s stored twice", uid, m.GetClientMessageId())
		}
		seen[m.GetClientMessageId()] = true
		if j < len(acked) && (acked[j].cmid != m.GetClientMessageId() || acked[j].seq != m.GetSequence()) {
			t.Fatalf("%s: stored #%d is %s at %d; acknowledged %s at %d", uid, j+1, m.GetClientMessageId(), m.GetSequence(), acked[j].cmid, acked[j].seq)
		}
	}
}
