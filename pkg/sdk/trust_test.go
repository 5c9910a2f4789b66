package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
)

// callLog records the methods a client calls.
type callLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *callLog) interceptor() grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		l.mu.Lock()
		l.calls = append(l.calls, method[strings.LastIndex(method, "/")+1:])
		l.mu.Unlock()
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

// take returns the calls since the last take.
func (l *callLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.calls
	l.calls = nil
	return out
}

// waitedOnce returns calls as if a lookup had not waited for a newer checkpoint: the
// polls (GetCheckpoint) and the first lookup, which the second repeats, taken out.
func waitedOnce(calls []string) []string {
	calls = slices.DeleteFunc(slices.Clone(calls), func(m string) bool { return m == "GetCheckpoint" })
	if len(calls) > 1 && calls[0] == "SearchCardsWithProofs" && calls[1] == "SearchCardsWithProofs" {
		calls = calls[1:]
	}
	return calls
}

// wantKeyChange checks that err is a *KeyChangedError of identity for reason, naming
// the old and new card, and returns it.
func wantKeyChange(t *testing.T, err error, identity string, reason sdk.KeyChangeReason, oldID, newID []byte) *sdk.KeyChangedError {
	t.Helper()
	var kc *sdk.KeyChangedError
	if !errors.As(err, &kc) || !errors.Is(err, sdk.ErrKeyChanged) {
		t.Fatalf("got %v; want a *KeyChangedError (%s)", err, reason)
	}
	if kc.Identity != identity || kc.Reason != reason || !bytes.Equal(kc.OldCardID, oldID) || !bytes.Equal(kc.NewCardID, newID) || kc.OldFingerprint == "" || kc.OldFingerprint == kc.NewFingerprint {
		t.Fatalf("key change %+v; want %s of %s from %x to %x, with both fingerprints", kc, reason, identity, oldID[:4], newID[:4])
	}
	return kc
}

// wantEncryptKeyChange encrypts from c to identity, which must be refused as a key
// change (wantKeyChange) with no envelope made, and returns the key change.
func wantEncryptKeyChange(t *testing.T, c *sdk.Client, identity string, reason sdk.KeyChangeReason, oldID, newID []byte) *sdk.KeyChangedError {
	t.Helper()
	env, err := c.Encrypt(context.Background(), []byte("for "+identity+" only"), identity)
	if env != nil {
		t.Error("an envelope was made for a changed key")
	}
	return wantKeyChange(t, err, identity, reason, oldID, newID)
}

// TestPinningFollowsEndorsedRotations: the first card of a contact is pinned, an
// unchanged contact costs no call beyond the lookup (in this client and in a new one
// on the same files), and an endorsed rotation is followed silently with one
// ListCardHistory; the pins are in a 0600 file beside the keystore.
func TestPinningFollowsEndorsedRotations(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	bob, bobCard := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	var log callLog
	dir := t.TempDir()
	alice := newDevice(t, n, app, "alice", e2ee.SuiteX25519, dir, log.interceptor())
	mustRegister(t, alice)
	// Both cards in the log, so that the checkpoint stays the same from here until
	// bob rotates.
	if _, err := alice.LookupCards(ctx, alice.identity, bob.identity); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Encrypt(ctx, []byte("first"), bob.identity); err != nil {
		t.Fatal(err)
	}
	ct, err := alice.Contact(ctx, bob.identity)
	if err != nil {
		t.Fatal(err)
	}
	if len(ct.Chain) != 1 || !bytes.Equal(ct.Chain[0].CardID, bobCard.ID) || ct.Chain[0].How != "first-use" || ct.Verified || ct.Pending != nil {
		t.Fatalf("alice's pin of bob = %+v; want his card, pinned on first use", ct)
	}
	log.take()
	if _, err := alice.Encrypt(ctx, []byte("again"), bob.identity); err != nil {
		t.Fatal(err)
	}
	if calls := log.take(); !slices.Equal(calls, []string{"SearchCardsWithProofs"}) {
		t.Errorf("encrypt to an unchanged pinned contact called %v; want only SearchCardsWithProofs", calls)
	}
	fi, err := os.Stat(alice.keystore + ".trust")
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pin file: %v, %v; want mode 0600 beside the keystore", fi, err)
	}

	// A new client on the same files (the next run of a CLI command) trusts the
	// pinned service key and card without asking for either.
	var log2 callLog
	again := newDevice(t, n, app, "alice", e2ee.SuiteX25519, dir, log2.interceptor())
	if _, err := again.Encrypt(ctx, []byte("next run"), bob.identity); err != nil {
		t.Fatal(err)
	}
	if calls := log2.take(); !slices.Equal(calls, []string{"SearchCardsWithProofs"}) {
		t.Errorf("encrypt from a new client to a pinned contact called %v; want only SearchCardsWithProofs (no GetServiceKey, GetLogKey or GetConsistencyProof)", calls)
	}

	// bob rotates: endorsed by his pinned key, so alice follows without a word, at the
	// cost of one ListCardHistory (and, for the log, a consistency proof to the
	// checkpoint that holds the rotation, which the lookup may wait for), and the next
	// encrypt is back to one call.
	rotated := rotatedCard(t, bob)
	if _, err := alice.Encrypt(ctx, []byte("after the rotation"), bob.identity); err != nil {
		t.Fatalf("encrypt after an endorsed rotation: %v", err)
	}
	if calls := waitedOnce(log.take()); !slices.Equal(calls, []string{"SearchCardsWithProofs", "GetConsistencyProof", "ListCardHistory"}) {
		t.Errorf("encrypt after bob's rotation called %v; want SearchCardsWithProofs, GetConsistencyProof, ListCardHistory", calls)
	}
	found, err := alice.TrustedCards(ctx, bob.identity)
	if err != nil || !bytes.Equal(found[bob.identity].ID, rotated.ID) {
		t.Fatalf("TrustedCards after the rotation = %v, %v", found, err)
	}
	if calls := log.take(); !slices.Equal(calls, []string{"SearchCardsWithProofs"}) {
		t.Errorf("after following the rotation, a lookup called %v; want only SearchCardsWithProofs", calls)
	}
	ct, err = alice.Contact(ctx, bob.identity)
	if err != nil || len(ct.Chain) != 2 || !bytes.Equal(ct.Chain[1].CardID, rotated.ID) || ct.Chain[1].How != "endorsed" {
		t.Fatalf("alice's pin of bob after his rotation = %+v, %v; want both cards, the new one endorsed", ct, err)
	}
	history, err := alice.CardHistory(ctx, bob.identity)
	if err != nil || len(history) != 2 || !history[0].Endorsed || history[1].Endorsed {
		t.Errorf("CardHistory = %v, %v; want the rotation endorsed (verified here) and the first card not", history, err)
	}
}

// TestKeyResetIsAKeyChange: bob loses his keys and resets them with a grant from the
// app backend. To alice, who pinned his old card, that is a key change: Encrypt and
// Decrypt refuse with a *KeyChangedError until she accepts, after comparing the
// safety number, which she and bob compute alike; then it all works again.
func TestKeyResetIsAKeyChange(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	alice, _ := registeredDevice(t, n, app, "alice", e2ee.SuiteX25519)
	bob, oldCard := registeredDevice(t, n, app, "bob", e2ee.SuiteHybrid)
	if _, err := alice.Encrypt(ctx, []byte("hi"), bob.identity); err != nil {
		t.Fatal(err)
	}
	before, err := alice.SafetyNumber(ctx, bob.identity)
	if err != nil {
		t.Fatal(err)
	}
	if theirs, err := bob.SafetyNumber(ctx, alice.identity); err != nil || theirs != before {
		t.Fatalf("safety numbers: alice %q, bob %q (%v); want the same", before, theirs, err)
	}

	fresh := newDevice(t, n, app, "bob", e2ee.SuiteHybrid, "")
	newCard, err := fresh.ResetKeys(ctx, app.ResetGrant(t, bob.identity))
	if err != nil {
		t.Fatal(err)
	}
	wantEncryptKeyChange(t, alice.Client, bob.identity, sdk.ReasonReset, oldCard.ID, newCard.ID)
	// A message bob's new device signs is refused the same way.
	env := mustEncrypt(t, fresh, []byte("it is me, bob"), alice.identity)
	_, err = alice.Decrypt(ctx, env, bob.identity)
	wantKeyChange(t, err, bob.identity, sdk.ReasonReset, oldCard.ID, newCard.ID)

	ct, err := alice.Contact(ctx, bob.identity)
	if err != nil {
		t.Fatal(err)
	}
	if ct.Pending == nil || !bytes.Equal(ct.Pending.CardID, newCard.ID) || ct.Pending.Reason != sdk.ReasonReset || ct.SafetyNumber != before {
		t.Fatalf("alice's view of bob = %+v; want the old safety number and the reset pending", ct)
	}
	theirs, err := fresh.SafetyNumber(ctx, alice.identity)
	if err != nil {
		t.Fatal(err)
	}
	if ct.Pending.SafetyNumber != theirs || theirs == before {
		t.Fatalf("the pending safety number %q, bob's new one %q, the old one %q: want the first two equal and new", ct.Pending.SafetyNumber, theirs, before)
	}
	if err := alice.VerifyContact(ctx, bob.identity, ""); !errors.Is(err, sdk.ErrKeyChanged) {
		t.Errorf("verifying a contact with a pending change: %v; want ErrKeyChanged", err)
	}
	changed, err := alice.AcceptKeyChange(ctx, bob.identity)
	if err != nil {
		t.Fatal(err)
	}
	if changed.Reason != sdk.ReasonReset || !bytes.Equal(changed.NewCardID, newCard.ID) {
		t.Errorf("AcceptKeyChange = %+v; want the reset to bob's new card", changed)
	}
	if _, err := alice.AcceptKeyChange(ctx, bob.identity); !errors.Is(err, sdk.ErrNoKeyChange) {
		t.Errorf("accepting twice: %v; want ErrNoKeyChange", err)
	}
	if got, err := alice.Decrypt(ctx, env, bob.identity); err != nil || string(got) != "it is me, bob" {
		t.Errorf("after accepting, alice decrypts %q, %v", got, err)
	}
	wantDelivered(t, alice, fresh, "welcome back", "alice's message to bob's new device")
	if now, _ := alice.SafetyNumber(ctx, bob.identity); now != theirs {
		t.Errorf("after accepting, alice's safety number is %q; want bob's %q", now, theirs)
	}
}

// TestKeyChangePolicyWarnAndVerifiedContacts: under KeyChangeWarn a key change is
// reported to OnKeyChange and the client goes on with the new key; a contact the user
// verified is refused all the same, and a wrong safety number does not verify.
func TestKeyChangePolicyWarnAndVerifiedContacts(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	bob, _ := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	carol, carolCard := registeredDevice(t, n, app, "carol", e2ee.SuiteX25519)
	var seen []*sdk.KeyChangedError
	c, err := sdk.New(ctx, sdk.Config{
		Addr: n.GRPC, Token: app.TokenFunc(app.User(t, "alice")), KeystorePath: filepath.Join(t.TempDir(), "keystore"),
		NoPassphrase: true, Suite: e2ee.SuiteX25519, KeyChangePolicy: sdk.KeyChangeWarn,
		OnKeyChange: func(kc *sdk.KeyChangedError) { seen = append(seen, kc) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mustRegister(t, c)
	if _, err := c.Encrypt(ctx, []byte("hi both"), bob.identity, carol.identity); err != nil {
		t.Fatal(err)
	}
	number, err := c.SafetyNumber(ctx, carol.identity)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.VerifyContact(ctx, carol.identity, strings.Replace(number, "1", "2", 1)+"9"); err == nil {
		t.Fatal("a wrong safety number verified the contact")
	}
	if err := c.VerifyContact(ctx, carol.identity, strings.ReplaceAll(number, " ", "")); err != nil {
		t.Fatal(err)
	}
	bobNew, err := newQuickDevice(t, n, app, "bob", e2ee.SuiteX25519).ResetKeys(ctx, app.ResetGrant(t, bob.identity))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Encrypt(ctx, []byte("bob changed"), bob.identity); err != nil {
		t.Fatalf("under KeyChangeWarn, encrypt to a changed contact: %v", err)
	}
	if len(seen) != 1 || seen[0].Identity != bob.identity || !bytes.Equal(seen[0].NewCardID, bobNew.ID) || seen[0].Verified {
		t.Fatalf("OnKeyChange saw %+v; want bob's reset, once", seen)
	}
	ct, err := c.Contact(ctx, bob.identity)
	if err != nil || ct.Pending != nil || ct.Chain[len(ct.Chain)-1].How != "warned" {
		t.Fatalf("bob's pin after the warning = %+v, %v; want the new card pinned as warned", ct, err)
	}

	carolNew, err := newQuickDevice(t, n, app, "carol", e2ee.SuiteX25519).ResetKeys(ctx, app.ResetGrant(t, carol.identity))
	if err != nil {
		t.Fatal(err)
	}
	if kc := wantEncryptKeyChange(t, c, carol.identity, sdk.ReasonReset, carolCard.ID, carolNew.ID); !kc.Verified {
		t.Errorf("the key change of a verified contact says Verified = false")
	}
	if len(seen) != 2 {
		t.Errorf("OnKeyChange was called %d times; want twice (bob, then carol)", len(seen))
	}
}
