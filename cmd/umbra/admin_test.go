package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// TestOnlineBackupAndRestore backs every store up while messages are being sent,
// restores the copies into a new data folder, and starts Umbra on it: the app, its
// identities and every message acknowledged before the backup are there.
func TestOnlineBackupAndRestore(t *testing.T) {
	bin := e2eBinary(t)
	run := func(args ...string) (string, int) { return umbraRun(t, bin, nil, args...) }
	dataA, dataB, backups := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b"), t.TempDir()
	grpcPort, httpPort := e2eFreePorts(t)
	server := fmt.Sprintf("127.0.0.1:%d", grpcPort)
	p := e2eStartDev(t, bin, dataA, grpcPort, httpPort)
	e2eAllowPlaintext(t, p)
	ids := e2eResolve(t, p, "alice", "bob")
	aliceToken := e2eIssue(t, p, ids["alice"])
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: server})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := messagingv1.NewMessagingServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+aliceToken)
	var acked atomic.Int64
	send := func(n int) error {
		_, err := msgs.Send(ctx, &messagingv1.SendRequest{
			ConversationId: ids["bob"], ClientMessageId: fmt.Sprintf("m-%d", n),
			Header:   &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT},
			Envelope: []byte("hello"),
		})
		if err == nil {
			acked.Add(1)
		}
		return err
	}
	for n := range 50 {
		if err := send(n); err != nil {
			t.Fatal(err)
		}
	}

	out, code := run("admin", "stores", "--server", server, "--admin-token", p.adminToken)
	if code != 0 {
		t.Fatalf("admin stores: exit %d\n%s", code, out)
	}
	var stores []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		stores = append(stores, strings.Fields(line)[0])
	}
	for _, want := range []string{"identity", "card", "messaging"} {
		if !strings.Contains(out, want) {
			t.Fatalf("admin stores lists %q; want %s among them", out, want)
		}
	}
	if _, code := run("admin", "stores", "--server", server, "--admin-token", "wrong"); code == 0 {
		t.Error("admin stores with a wrong credential succeeded")
	}

	// Back up while alice keeps sending.
	stop := make(chan struct{})
	var sender sync.WaitGroup
	sender.Go(func() {
		for n := 50; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if send(n) != nil {
				return
			}
		}
	})
	before := acked.Load()
	for _, s := range stores {
		if out, code := run("admin", "backup", "--server", server, "--admin-token", p.adminToken, "--store", s, "--out", filepath.Join(backups, s+".db")); code != 0 {
			t.Fatalf("admin backup %s: exit %d\n%s", s, code, out)
		}
	}
	close(stop)
	sender.Wait()
	if out, code := run("admin", "backup", "--server", server, "--admin-token", p.adminToken, "--store", "nope", "--out", filepath.Join(backups, "nope.db")); code == 0 || !strings.Contains(out, "no store") {
		t.Errorf("backup of an unknown store: exit %d\n%s", code, out)
	}
	p.stop(t)

	// Restore into a new folder (the dev credentials file goes along, so the same
	// app key is printed), refusing junk and a running service.
	if err := os.MkdirAll(dataB, 0o700); err != nil {
		t.Fatal(err)
	}
	creds, err := os.ReadFile(filepath.Join(dataA, "dev-credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataB, "dev-credentials.json"), creds, 0o600); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(backups, "junk.db")
	os.WriteFile(junk, []byte("not a database"), 0o600)
	if out, code := run("admin", "restore", "--store", "card", "--from", junk, "--data", dataB); code == 0 {
		t.Errorf("restore of a junk file succeeded:\n%s", out)
	}
	for _, s := range stores {
		if out, code := run("admin", "restore", "--store", s, "--from", filepath.Join(backups, s+".db"), "--data", dataB); code != 0 {
			t.Fatalf("admin restore %s: exit %d\n%s", s, code, out)
		}
	}
	p2 := e2eStartDev(t, bin, dataB, grpcPort, httpPort)
	defer p2.stop(t)
	if out, code := run("admin", "restore", "--store", "card", "--from", filepath.Join(backups, "card.db"), "--data", dataB); code == 0 || !strings.Contains(out, "stop the card service") {
		t.Errorf("restore over a running service: exit %d\n%s", code, out)
	}
	if p2.apiKey != p.apiKey {
		t.Fatalf("the restored node prints another API key")
	}
	if again := e2eResolve(t, p2, "alice")["alice"]; again != ids["alice"] {
		t.Fatalf("alice resolves to %s after the restore, %s before", again, ids["alice"])
	}
	ctx2 := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+e2eIssue(t, p2, ids["alice"]))
	hctx, cancel := context.WithTimeout(ctx2, 10*time.Second)
	defer cancel()
	page, err := msgs.History(hctx, &messagingv1.HistoryRequest{ConversationId: ids["bob"], PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if latest := page.GetLatestSequence(); latest < uint64(before) || latest > uint64(acked.Load()) {
		t.Errorf("the restored conversation ends at %d; %d were acknowledged before the backup began and %d in all", latest, before, acked.Load())
	}
}
