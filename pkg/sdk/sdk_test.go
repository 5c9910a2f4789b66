package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/keystore"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// device is one user's SDK client with its own keystore folder.
type device struct {
	*sdk.Client
	identity string
	keystore string
}

// startNode starts a node for a test, configured by configure (if any), and makes an
// app on it: where the devices of a test are made.
func startNode(t testing.TB, configure ...func(*node.Config)) (*nodetest.Node, *nodetest.App) {
	t.Helper()
	n := nodetest.Start(t, configure...)
	return n, n.NewApp(t)
}

// registerer is a client, or a device holding one, that mustRegister registers.
type registerer interface {
	Register(context.Context) (*sdk.Card, error)
}

// mustRegister registers each client (publishes its first card), failing t on an
// error.
func mustRegister(t testing.TB, clients ...registerer) {
	t.Helper()
	for _, c := range clients {
		registeredCard(t, c)
	}
}

// rotatedCard rotates the keys of c and returns its new card, failing t on an error.
func rotatedCard(t testing.TB, c interface {
	RotateKeys(context.Context) (*sdk.Card, error)
}) *sdk.Card {
	t.Helper()
	card, err := c.RotateKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return card
}

// mustEncrypt has d encrypt text to recipients, failing t on an error.
func mustEncrypt(t testing.TB, d *device, text []byte, recipients ...string) []byte {
	t.Helper()
	env, err := d.Encrypt(context.Background(), text, recipients...)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// registeredCard registers c and returns its first card, failing t on an error.
func registeredCard(t testing.TB, c registerer) *sdk.Card {
	t.Helper()
	card, err := c.Register(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return card
}

// newDevice makes a device of uid whose keystore is in dir (a new folder when dir is
// ""), dialling the node with opts besides the usual options. The keystore has a
// passphrase at the cheapest Argon2id cost (CheapKeystore): these tests are not about
// Argon2id.
func newDevice(t *testing.T, n *nodetest.Node, app *nodetest.App, uid string, suite e2ee.Suite, dir string, opts ...grpc.DialOption) *device {
	t.Helper()
	id := app.User(t, uid)
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, "keystore")
	cfg := sdk.Config{
		Addr:         n.GRPC,
		Token:        app.TokenFunc(id),
		KeystorePath: path,
		Passphrase:   []byte("passphrase of " + uid),
		Suite:        suite,
	}
	for _, o := range opts {
		if _, ok := o.(noKTOption); ok {
			cfg = sdk.WithoutKeyTransparency(cfg)
			continue
		}
		cfg.DialOptions = append(cfg.DialOptions, o)
	}
	c, err := sdk.New(context.Background(), sdk.CheapKeystore(cfg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &device{Client: c, identity: id, keystore: path}
}

// withoutKT, among newDevice's options, makes the device look cards up without key
// transparency (sdk.WithoutKeyTransparency): for the tests of the pins on their own.
var withoutKT grpc.DialOption = noKTOption{}

type noKTOption struct{ grpc.EmptyDialOption }

// registeredDevice is newDevice, in a keystore folder of its own, with its card
// published.
func registeredDevice(t *testing.T, n *nodetest.Node, app *nodetest.App, uid string, suite e2ee.Suite) (*device, *sdk.Card) {
	t.Helper()
	d := newDevice(t, n, app, uid, suite, "")
	return d, registeredCard(t, d)
}

// wantDelivered has from encrypt text to the identity of to, and fails t unless to
// decrypts it, from from; what names the message in a failure.
func wantDelivered(t *testing.T, from, to *device, text, what string) {
	t.Helper()
	env := mustEncrypt(t, from, []byte(text), to.identity)
	if got, err := to.Decrypt(context.Background(), env, from.identity); err != nil || string(got) != text {
		t.Fatalf("%s: decrypts to %q, %v; want %q", what, got, err, text)
	}
}

func TestEncryptDecryptBetweenUsersAndSuites(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	alice := newDevice(t, n, app, "alice", e2ee.SuiteHybrid, "")
	bob := newDevice(t, n, app, "bob", e2ee.SuiteX25519, "")
	carol := newDevice(t, n, app, "carol", e2ee.SuiteX25519, "")
	for _, d := range []*device{alice, bob, carol} {
		if d.HasPrivateKey() {
			t.Fatal("a fresh device has keys")
		}
		card := registeredCard(t, d)
		if card.Identity != d.identity || !d.HasPrivateKey() {
			t.Fatalf("Register = %+v", card)
		}
	}
	found, err := alice.FindCards(ctx, bob.identity, carol.identity, app.User(t, "nobody"))
	if err != nil || len(found) != 2 {
		t.Fatalf("FindCards = %v, %v; want bob and carol only", found, err)
	}

	msg := []byte("meet at noon")
	env := mustEncrypt(t, alice, msg, bob.identity)
	for name, d := range map[string]*device{"bob": bob, "alice herself": alice} {
		got, err := d.Decrypt(ctx, env, alice.identity)
		if err != nil || !bytes.Equal(got, msg) {
			t.Errorf("%s decrypts %q, %v", name, got, err)
		}
	}
	if _, err := bob.Decrypt(ctx, env, carol.identity); !errors.Is(err, e2ee.ErrWrongSender) {
		t.Errorf("decrypt claiming another sender: %v, want ErrWrongSender", err)
	}
	if _, err := carol.Decrypt(ctx, env, alice.identity); !errors.Is(err, e2ee.ErrNotRecipient) {
		t.Errorf("decrypt by a non-recipient: %v, want ErrNotRecipient", err)
	}
	tampered := bytes.Clone(env)
	tampered[len(tampered)-3] ^= 1
	if _, err := bob.Decrypt(ctx, tampered, alice.identity); err == nil {
		t.Error("a tampered message decrypted")
	}
	if _, err := alice.Encrypt(ctx, msg, app.User(t, "nobody")); !errors.Is(err, sdk.ErrNoCard) {
		t.Errorf("encrypt to a user without a card: %v, want ErrNoCard", err)
	}
}

func TestRotationKeepsHistoryReadable(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	alice, first := registeredDevice(t, n, app, "alice", e2ee.SuiteX25519)
	bob, _ := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	before := mustEncrypt(t, alice, []byte("before"), bob.identity)
	second := rotatedCard(t, alice)
	if !bytes.Equal(second.PreviousCardID, first.ID) || !second.Endorsed {
		t.Errorf("rotated card = %+v; want it to name and be endorsed by the first", second)
	}
	if _, err := bob.RotateKeys(ctx); err != nil {
		t.Fatal(err)
	}
	after := mustEncrypt(t, alice, []byte("after"), bob.identity)
	// Bob reads both: the old message with his superseded key, signed by alice's
	// superseded card, which was active when it was written.
	for want, env := range map[string][]byte{"before": before, "after": after} {
		got, err := bob.Decrypt(ctx, env, alice.identity)
		if err != nil || string(got) != want {
			t.Errorf("bob decrypts %q, %v; want %q", got, err, want)
		}
	}
	// Alice, too, reads what she sent before her rotation.
	if got, err := alice.Decrypt(ctx, before, alice.identity); err != nil || string(got) != "before" {
		t.Errorf("alice re-reads her old message: %q, %v", got, err)
	}
	history, err := bob.CardHistory(ctx, alice.identity)
	if err != nil || len(history) != 2 {
		t.Fatalf("history = %v, %v", history, err)
	}

	// A message signed with alice's retired key and dated after the rotation is refused:
	// a stolen old key cannot forge new messages.
	ks, err := keystore.Open(alice.keystore, []byte("passphrase of alice"))
	if err != nil {
		t.Fatal(err)
	}
	wantForgeryRefused(t, bob, alice.identity, ks.KeyFor(first.ID), first.ID, "a retired key")
}

// wantForgeryRefused checks that reader refuses a message from sender signed with key,
// the key of sender's card cardID, and dated an hour from now, after that card stopped
// being valid; what names the key in the failure.
func wantForgeryRefused(t *testing.T, reader *device, sender string, key *e2ee.KeyPair, cardID []byte, what string) {
	t.Helper()
	ctx := context.Background()
	readerCards, err := reader.FindCards(ctx, reader.identity)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := e2ee.Encrypt(key, cardID, []*e2ee.Card{readerCards[reader.identity].Card}, []byte("forged"), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Decrypt(ctx, forged, sender); !errors.Is(err, sdk.ErrCardNotValidThen) {
		t.Errorf("a message from %s dated after its card: %v; want ErrCardNotValidThen", what, err)
	}
}

func TestRegisterRevokeUnregisterCleanup(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	alice, _ := registeredDevice(t, n, app, "alice", e2ee.SuiteX25519)
	if _, err := alice.Register(ctx); !errors.Is(err, sdk.ErrAlreadyRegistered) {
		t.Errorf("second Register: %v", err)
	}
	// Another device of alice with an empty keystore cannot take over her identity.
	other := newDevice(t, n, app, "alice", e2ee.SuiteX25519, "")
	if _, err := other.Register(ctx); !errors.Is(err, sdk.ErrAlreadyRegistered) {
		t.Errorf("Register on a second device: %v", err)
	}
	if other.HasPrivateKey() {
		t.Error("the refused Register left keys behind")
	}
	if _, err := os.Stat(other.keystore); !os.IsNotExist(err) {
		t.Errorf("the refused Register left a keystore file: %v", err)
	}
	// The keystore is encrypted at rest and private to the user.
	fi, err := os.Stat(alice.keystore)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keystore mode: %v, %v", fi, err)
	}
	// Revoke keeps the keys; a new card after it is a reset, which the token alone
	// cannot publish: ResetKeys, with a grant from the app backend, starts afresh.
	msg := mustEncrypt(t, alice, []byte("to myself"))
	if err := alice.RevokeCard(ctx); err != nil {
		t.Fatal(err)
	}
	if found, _ := alice.FindCards(ctx, alice.identity); len(found) != 0 {
		t.Error("a revoked card is still found")
	}
	if _, err := alice.PublishCard(ctx); !errors.Is(err, sdk.ErrResetGrantRequired) {
		t.Fatalf("PublishCard after the revocation: %v; want ErrResetGrantRequired", err)
	}
	reset, err := alice.ResetKeys(ctx, app.ResetGrant(t, alice.identity))
	if err != nil {
		t.Fatal(err)
	}
	if !reset.KeyReset || reset.Endorsed || len(reset.PreviousCardID) != 0 {
		t.Errorf("card after ResetKeys = %+v; want a reset card, unendorsed, naming no previous card", reset)
	}
	if got, err := alice.Decrypt(ctx, msg, alice.identity); err != nil || string(got) != "to myself" {
		t.Errorf("message to the revoked card after the reset: %q, %v", got, err)
	}
	// Unregister revokes and deletes the keys.
	if err := alice.Unregister(ctx); err != nil {
		t.Fatal(err)
	}
	if alice.HasPrivateKey() {
		t.Error("keys left after Unregister")
	}
	if _, err := os.Stat(alice.keystore); !os.IsNotExist(err) {
		t.Errorf("keystore file left after Unregister: %v", err)
	}
	if _, err := alice.Encrypt(ctx, []byte("x")); !errors.Is(err, sdk.ErrNoPrivateKey) {
		t.Errorf("Encrypt without keys: %v", err)
	}
	if err := alice.Cleanup(); err != nil {
		t.Errorf("Cleanup of nothing: %v", err)
	}
}

// TestResetKeysAfterEveryKeyIsLost: alice loses her only device. Her access token
// alone cannot put new keys in place of her card, on a new device or after revoking it
// (what a thief of her token would try); with a grant from the app backend, ResetKeys
// does, once per grant, and revokes the lost card, so the lost device can no longer
// sign as her. Bob sees the new card as a reset.
func TestResetKeysAfterEveryKeyIsLost(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	lost, first := registeredDevice(t, n, app, "alice", e2ee.SuiteX25519)
	bob, _ := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	before := mustEncrypt(t, lost, []byte("before the loss"), bob.identity)

	// A new device: her card is active, so Register refuses; a reset without a grant,
	// or with someone else's, is refused and leaves no keystore behind.
	fresh := newDevice(t, n, app, "alice", e2ee.SuiteHybrid, "")
	if _, err := fresh.Register(ctx); !errors.Is(err, sdk.ErrAlreadyRegistered) {
		t.Fatalf("Register on the new device: %v; want ErrAlreadyRegistered", err)
	}
	if _, err := fresh.ResetKeys(ctx, ""); !errors.Is(err, sdk.ErrResetGrantRequired) {
		t.Errorf("ResetKeys without a grant: %v; want ErrResetGrantRequired", err)
	}
	if _, err := fresh.ResetKeys(ctx, app.ResetGrant(t, bob.identity)); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ResetKeys with bob's grant: %v; want PermissionDenied", err)
	}
	if _, err := os.Stat(fresh.keystore); !os.IsNotExist(err) || fresh.HasPrivateKey() {
		t.Errorf("a refused reset left a keystore (%v) or keys", err)
	}
	// What a thief of her token can do: revoke her card (a user must always be able
	// to), but not publish one of its own.
	thief := newDevice(t, n, app, "alice", e2ee.SuiteX25519, "")
	if _, err := cardv1.NewCardServiceClient(thief.Conn()).RevokeCard(ctx, &cardv1.RevokeCardRequest{CardId: first.ID}); err != nil {
		t.Fatalf("revoking with the token alone: %v", err)
	}
	if _, err := thief.Register(ctx); !errors.Is(err, sdk.ErrResetGrantRequired) {
		t.Fatalf("Register with the token alone after the revocation: %v; want ErrResetGrantRequired", err)
	}

	grant := app.ResetGrant(t, fresh.identity)
	card, err := fresh.ResetKeys(ctx, grant)
	if err != nil {
		t.Fatal(err)
	}
	if !card.KeyReset || card.Endorsed || card.Suite != e2ee.SuiteHybrid || !fresh.HasPrivateKey() {
		t.Errorf("reset card = %+v; want a reset card of the new device's suite, its key in the keystore", card)
	}
	if _, err := thief.ResetKeys(ctx, grant); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the grant used a second time: %v; want PermissionDenied", err)
	}

	// Bob sees the reset, encrypts to the new card, and still verifies alice's old
	// message; a message the lost device signs now is refused.
	history, err := bob.CardHistory(ctx, fresh.identity)
	if err != nil || len(history) != 2 || !history[0].KeyReset || history[1].KeyReset || history[1].RevokedAt.IsZero() {
		t.Fatalf("alice's history as bob sees it = %+v, %v; want the reset card over the revoked first one", history, err)
	}
	if got, err := bob.Decrypt(ctx, before, fresh.identity); err != nil || string(got) != "before the loss" {
		t.Errorf("alice's message from before the loss: %q, %v", got, err)
	}
	wantDelivered(t, bob, fresh, "welcome back", "bob's message to the new device")
	ks, err := keystore.Open(lost.keystore, []byte("passphrase of alice"))
	if err != nil {
		t.Fatal(err)
	}
	lostKey, _ := ks.Current()
	wantForgeryRefused(t, bob, fresh.identity, lostKey, first.ID, "the lost key")
}

// TestTokenRefreshedWhenRefused: a token the server refuses is replaced by a fresh one
// from the TokenFunc, and the call succeeds.
func TestTokenRefreshedWhenRefused(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	id := app.User(t, "alice")
	var calls atomic.Int32
	c, err := sdk.New(context.Background(), sdk.Config{
		Addr: n.GRPC,
		Token: func(ctx context.Context) (string, error) {
			if calls.Add(1) == 1 {
				return "not-a-token", nil
			}
			return app.IssueToken(ctx, id, 0)
		},
		KeystorePath: filepath.Join(t.TempDir(), "keystore"),
		NoPassphrase: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.Identity(context.Background())
	if err != nil || got != id {
		t.Fatalf("Identity = %q, %v", got, err)
	}
	if calls.Load() != 2 {
		t.Errorf("token fetched %d times; want 2 (the refused one, then a fresh one)", calls.Load())
	}
	if _, err := c.FindCards(context.Background(), id); err != nil || calls.Load() != 2 {
		t.Errorf("a valid cached token was fetched again: %d calls, %v", calls.Load(), err)
	}
}

func TestNewRequiresAPassphraseDecision(t *testing.T) {
	t.Parallel()
	_, err := sdk.New(context.Background(), sdk.Config{
		Addr:         "127.0.0.1:1",
		Token:        func(context.Context) (string, error) { return "", nil },
		KeystorePath: filepath.Join(t.TempDir(), "keystore"),
	})
	if err == nil {
		t.Fatal("a keystore without a passphrase was accepted without NoPassphrase")
	}
}

// TestCardLifetimeClockSkew pins the rule of docs/wire-format.md 6.3: a message's
// created_at must lie within its sender card's lifetime as the card service reports it,
// widened by DefaultClockSkew (5 minutes) on each side, and not a second more.
func TestCardLifetimeClockSkew(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	alice, first := registeredDevice(t, n, app, "alice", e2ee.SuiteX25519)
	bob, bobCard := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	second := rotatedCard(t, alice)
	if err := alice.RevokeCard(ctx); err != nil {
		t.Fatal(err)
	}
	first, err := bob.CardByID(ctx, first.ID)
	if err != nil {
		t.Fatal(err)
	}
	second, err = bob.CardByID(ctx, second.ID)
	if err != nil || second.RevokedAt.IsZero() || first.SupersededAt.IsZero() {
		t.Fatalf("cards: %+v, %+v, %v", first, second, err)
	}
	ks, err := keystore.Open(alice.keystore, []byte("passphrase of alice"))
	if err != nil {
		t.Fatal(err)
	}
	skew := sdk.DefaultClockSkew
	if skew != 5*time.Minute {
		t.Fatalf("DefaultClockSkew = %s; docs/wire-format.md says 5 minutes", skew)
	}
	// created_at is whole seconds; the service's times have nanoseconds.
	ceil := func(at time.Time) time.Time { return at.Add(time.Second - time.Nanosecond).Truncate(time.Second) }
	for _, tc := range []struct {
		name    string
		card    *sdk.Card
		written time.Time
		ok      bool
	}{
		{"published_at - skew", first, ceil(first.PublishedAt).Add(-skew), true},
		{"a second earlier", first, ceil(first.PublishedAt).Add(-skew - time.Second), false},
		{"superseded_at + skew", first, first.SupersededAt.Truncate(time.Second).Add(skew), true},
		{"a second later", first, first.SupersededAt.Truncate(time.Second).Add(skew + time.Second), false},
		{"revoked_at + skew", second, second.RevokedAt.Truncate(time.Second).Add(skew), true},
		{"a second after that", second, second.RevokedAt.Truncate(time.Second).Add(skew + time.Second), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := e2ee.Encrypt(ks.KeyFor(tc.card.ID), tc.card.ID, []*e2ee.Card{bobCard.Card}, []byte("dated"), tc.written)
			if err != nil {
				t.Fatal(err)
			}
			_, err = bob.Decrypt(ctx, env, alice.identity)
			if tc.ok && err != nil || !tc.ok && !errors.Is(err, sdk.ErrCardNotValidThen) {
				t.Fatalf("written %s: Decrypt = %v; want ok = %v", tc.written, err, tc.ok)
			}
		})
	}
}
