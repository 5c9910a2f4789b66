package sdk_test

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// Key transparency with an honest server: lookups are proved, batched, persisted, and
// wait for the checkpoint of a card newer than the latest. The malicious server's
// tests are in kt_malicious_test.go.

// unknownIdentity is a well-formed identity of nobody.
func unknownIdentity(t testing.TB) string {
	t.Helper()
	b := make([]byte, 20)
	rand.Read(b)
	return "u_" + strings.ToLower(base32.StdEncoding.EncodeToString(b))
}

// logKey is the node's log key as a verifier key, asked without a credential.
func logKey(t testing.TB, n *nodetest.Node) string {
	t.Helper()
	resp, err := cardv1.NewCardServiceClient(n.Conn()).GetLogKey(context.Background(), &cardv1.GetLogKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetVerifierKey()
}

// ktState reads a device's key transparency state file.
func ktState(t testing.TB, d *device) map[string]any {
	t.Helper()
	b, err := os.ReadFile(d.keystore + ".kt")
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLookupsAreProvedAndTheCheckpointKept: FindCards answers with the cards the map
// names, each proof verified against a checkpoint signed by the log key, which the
// client pinned on first use; the checkpoint and the key are kept in a 0600 file
// beside the keystore, so a new client on the same files asks for neither; a lookup
// of 1,500 identities is two SearchCardsWithProofs; LookupCards shows the proofs,
// of absence too.
func TestLookupsAreProvedAndTheCheckpointKept(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	bob, bobCard := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	carol, _ := registeredDevice(t, n, app, "carol", e2ee.SuiteX25519)
	dir := t.TempDir()
	var log callLog
	alice := newDevice(t, n, app, "alice", e2ee.SuiteX25519, dir, log.interceptor())
	mustRegister(t, alice)
	nobody := unknownIdentity(t)
	proved, err := alice.LookupCards(ctx, bob.identity, carol.identity, nobody, alice.identity)
	if err != nil {
		t.Fatal(err)
	}
	if p := proved[bob.identity]; p == nil || p.Card == nil || !sameBytes(p.Card.ID, bobCard.ID) || p.Value == nil || p.Leaf == nil || p.Checkpoint == nil || p.Checkpoint.Size < 3 {
		t.Fatalf("bob's proved lookup = %+v; want his card, its map entry and log entry, at a checkpoint of his publication", p)
	}
	if p := proved[nobody]; p == nil || p.Card != nil || p.Value != nil || p.Proof.GetMapProof() == nil {
		t.Fatalf("a lookup of nobody = %+v; want a proof of absence", p)
	}
	if calls := log.take(); !slices.Contains(calls, "SearchCardsWithProofs") || !slices.Contains(calls, "GetLogKey") {
		t.Errorf("the first lookups called %v; want SearchCardsWithProofs and GetLogKey (pinned on first use)", calls)
	}
	// What is kept, and where.
	fi, err := os.Stat(alice.keystore + ".kt")
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key transparency state: %v, %v; want a 0600 file beside the keystore", fi, err)
	}
	st := ktState(t, alice)
	keys, _ := st["log_keys"].([]any)
	if len(keys) != 1 || keys[0].(map[string]any)["verifier_key"] != logKey(t, n) || keys[0].(map[string]any)["source"] != "first-use" {
		t.Errorf("pinned log keys = %v; want the node's, pinned on first use", st["log_keys"])
	}
	kept, err := alice.KeptCheckpoint()
	if err != nil || kept == nil || st["checkpoint"] != string(kept.Signed) {
		t.Fatalf("KeptCheckpoint = %+v, %v; want the checkpoint of the state file", kept, err)
	}
	if _, err := kt.OpenCheckpoint(kept.Signed, logKey(t, n)); err != nil {
		t.Errorf("the kept checkpoint does not verify with the log key: %v", err)
	}

	// A new client on the same files: no GetLogKey, no consistency proof for the same
	// checkpoint; one call for an Encrypt.
	var log2 callLog
	again := newDevice(t, n, app, "alice", e2ee.SuiteX25519, dir, log2.interceptor())
	if _, err := again.Encrypt(ctx, []byte("hello"), bob.identity, carol.identity); err != nil {
		t.Fatal(err)
	}
	if calls := log2.take(); !slices.Equal(calls, []string{"SearchCardsWithProofs"}) {
		t.Errorf("encrypt from a new client on the same files called %v; want one SearchCardsWithProofs", calls)
	}

	// 1,500 identities: two batches, each proved; nobody among them has a card but bob
	// and carol.
	many := []string{bob.identity, carol.identity}
	for range 1498 {
		many = append(many, unknownIdentity(t))
	}
	found, err := again.FindCards(ctx, many...)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 2 || found[bob.identity] == nil || found[carol.identity] == nil {
		t.Fatalf("FindCards of 1,500 = %d cards; want bob's and carol's", len(found))
	}
	calls := log2.take()
	count := func(m string) int {
		return len(slices.DeleteFunc(slices.Clone(calls), func(c string) bool { return c != m }))
	}
	if count("SearchCardsWithProofs") != 2 || count("GetConsistencyProof") > 1 || count("SearchCards") > 2 {
		t.Errorf("a lookup of 1,500 identities called %v; want 2 SearchCardsWithProofs (and at most one consistency proof, and a SearchCards per batch for the identities without a card)", calls)
	}
}

func sameBytes(a, b []byte) bool { return string(a) == string(b) }

// TestLookupWaitsForTheCheckpointOfANewCard: a card published after the latest
// checkpoint is found once the next checkpoint holds it (the lookup waits); with a
// card service whose next checkpoint does not come in time, the lookup refuses with
// ErrNotYetInLog rather than use a card the log does not prove. The user's own new
// card is this device's own and needs no wait.
func TestLookupWaitsForTheCheckpointOfANewCard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("the next checkpoint holds it", func(t *testing.T) {
		t.Parallel()
		n, app := startNode(t)
		alice, _ := registeredDevice(t, n, app, "alice", e2ee.SuiteX25519)
		if _, err := alice.LookupCards(ctx, alice.identity); err != nil { // a checkpoint kept
			t.Fatal(err)
		}
		bob, bobCard := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
		found, err := alice.FindCards(ctx, bob.identity)
		if err != nil || found[bob.identity] == nil || !sameBytes(found[bob.identity].ID, bobCard.ID) {
			t.Fatalf("FindCards just after bob's publication = %v, %v; want his card, proved", found, err)
		}
		rotated := rotatedCard(t, bob)
		found, err = alice.FindCards(ctx, bob.identity)
		if err != nil || !sameBytes(found[bob.identity].ID, rotated.ID) {
			t.Fatalf("FindCards just after bob's rotation = %v, %v; want his new card", found, err)
		}
	})
	t.Run("no checkpoint in time", func(t *testing.T) {
		t.Parallel()
		n, app := startNode(t, func(c *node.Config) { c.Card.CheckpointInterval = time.Hour })
		alice := newDevice(t, n, app, "alice", e2ee.SuiteX25519, "")
		card := registeredCard(t, alice)
		// Her own card: this device's, no wait.
		start := time.Now()
		wantDelivered(t, alice, alice, "to myself", "a message to her own new card")
		if time.Since(start) > 2*time.Second {
			t.Errorf("her own new card took %s", time.Since(start))
		}
		found, err := alice.FindCards(ctx, alice.identity)
		if err != nil || !sameBytes(found[alice.identity].ID, card.ID) {
			t.Errorf("FindCards of herself = %v, %v", found, err)
		}
		// Another device of hers, and bob, must wait, and refuse.
		bob := newDevice(t, n, app, "bob", e2ee.SuiteX25519, "")
		if _, err := bob.FindCards(ctx, alice.identity); !errors.Is(err, sdk.ErrNotYetInLog) {
			t.Errorf("FindCards of a card no checkpoint holds: %v; want ErrNotYetInLog", err)
		}
		if _, err := bob.LookupCards(ctx, alice.identity); !errors.Is(err, sdk.ErrNotYetInLog) {
			t.Errorf("LookupCards of a card no checkpoint holds: %v; want ErrNotYetInLog", err)
		}
	})
}
