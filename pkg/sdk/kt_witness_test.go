package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/internal/ktlog"
	"github.com/umbra-e2ee/umbra/internal/witness"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
)

// TestLookupsRequireTheWitnesses: a client configured with witnesses (Config.Witnesses)
// proves every lookup against a checkpoint they cosigned, and keeps the cosigned
// checkpoint; with its witness unreachable, the lookup is refused (ErrNotWitnessed)
// rather than proved against a checkpoint no witness vouched for. A real node, a real
// witness (internal/witness) following its card service, over loopback.
func TestLookupsRequireTheWitnesses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	n, app := startNode(t)
	bob, _ := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)

	log, err := ktlog.Dial(ktlog.Config{Addr: n.GRPC})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	signer, err := kt.NewWitnessSigner("witness.test/lookups", bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	w, err := witness.New(ctx, log, witness.Config{LogKeys: []string{logKey(t, n)}, Signer: signer, Dir: t.TempDir()}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.Handler())
	t.Cleanup(srv.Close)
	wkey, err := kt.ParseWitnessKey(signer.Key().String())
	if err != nil {
		t.Fatal(err)
	}

	id := app.User(t, "alice")
	path := filepath.Join(t.TempDir(), "keystore")
	alice, err := sdk.New(ctx, sdk.CheapKeystore(sdk.Config{
		Addr: n.GRPC, Token: app.TokenFunc(id), KeystorePath: path, Passphrase: []byte("alice's passphrase"),
		Suite: e2ee.SuiteX25519, Witnesses: []sdk.Witness{{Key: signer.Key().String(), URL: srv.URL}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alice.Close() })
	mustRegister(t, alice)
	if cards, err := alice.FindCards(ctx, bob.identity); err != nil || cards[bob.identity] == nil {
		t.Fatalf("FindCards with the witness up: %v, %v", cards, err)
	}
	kept, _ := ktState(t, &device{keystore: path})["checkpoint"].(string)
	if _, err := kt.VerifyCosignature([]byte(kept), wkey); err != nil {
		t.Errorf("the kept checkpoint carries no valid cosignature of the witness: %v\n%s", err, kept)
	}

	srv.Close()
	if _, err := alice.FindCards(ctx, bob.identity); !errors.Is(err, kt.ErrNotWitnessed) {
		t.Fatalf("FindCards with the witness down: %v; want ErrNotWitnessed", err)
	}
}
