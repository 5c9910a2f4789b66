package card

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// TestLogKeyRotation rotates the log key through the API: only the admin may; during
// the overlap the served checkpoint (the latest at once, and each new one) verifies
// with the old key alone and with the new key alone, and stays consistent with the
// checkpoints before; after the old key's retirement it verifies with the new key
// only, across a restart; GetLogKey lists both with their state. The REST routes
// answer too.
func TestLogKeyRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t, "A")
	users := e.newUsers(t, a, "alice", "bob", "carol")
	alice, bob, carol := users[0], users[1], users[2]
	e.publish(t, alice, newKeys(t, e2ee.SuiteX25519), nil, nil)
	oldKey := e.logKey(t)
	before := e.publishCheckpoint(t)
	first, err := e.client.GetLogKey(as(""), &cardv1.GetLogKeyRequest{})
	if err != nil || len(first.GetKeys()) != 1 || first.GetKeys()[0].GetVerifierKey() != oldKey || first.GetKeys()[0].GetRetiredAt() != nil {
		t.Fatalf("GetLogKey before a rotation = %v, %v; want the one key, listed", first, err)
	}

	servicetest.CheckRefusals(t, slices.Concat(
		notAdmin(alice, "RotateLogKey", e.client.RotateLogKey, &cardv1.RotateLogKeyRequest{}),
		notAdmin(alice, "RetireLogKey", e.client.RetireLogKey, &cardv1.RetireLogKeyRequest{Key: first.GetKeys()[0].GetKeyId()}),
	), e.snapshot)
	if now, err := e.client.GetLogKey(as(""), &cardv1.GetLogKeyRequest{}); err != nil || !proto.Equal(now, first) {
		t.Fatalf("a refused call changed the log keys: %v, %v", now, err)
	}

	// opens checks the latest checkpoint against each key set: nil where it must
	// verify, the error kind where it must not.
	opens := func(t *testing.T, c cardv1.CardServiceClient, want map[string]error) *kt.Checkpoint {
		t.Helper()
		resp, err := c.GetCheckpoint(context.Background(), &cardv1.GetCheckpointRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var cp *kt.Checkpoint
		for key, wantErr := range want {
			got, err := kt.OpenCheckpoint(resp.GetCheckpoint(), key)
			if !errors.Is(err, wantErr) {
				t.Errorf("the latest checkpoint with %s: %v; want %v", key, err, wantErr)
			}
			if err == nil {
				cp = got
			}
		}
		return cp
	}

	e.clock.Add(time.Minute)
	rot, err := e.client.RotateLogKey(as(testAdmin), &cardv1.RotateLogKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	newKey := rot.GetKey().GetVerifierKey()
	if newKey == oldKey || len(rot.GetKeys()) != 2 || rot.GetKeys()[1].GetVerifierKey() != newKey {
		t.Fatalf("RotateLogKey = %v; want a new key listed after the old one", rot)
	}
	if newV, oldV := mustVerifier(t, newKey), mustVerifier(t, oldKey); newV.Name() != oldV.Name() {
		t.Errorf("the new key is named %q, the old %q; want the log's origin for both", newV.Name(), oldV.Name())
	}
	// At once: the latest checkpoint (no new card event) is signed by both.
	cp := opens(t, e.client, map[string]error{oldKey: nil, newKey: nil})
	if cp == nil || *cp != *before {
		t.Errorf("the checkpoint after the rotation is %+v; want the same body as before, %+v", cp, before)
	}
	if got := e.logKey(t); got != newKey {
		t.Errorf("GetLogKey's verifier key during the rotation = %s; want the new one", got)
	}
	if _, err := e.client.RotateLogKey(as(testAdmin), &cardv1.RotateLogKeyRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a second rotation during one: %v; want FailedPrecondition", err)
	}
	// A new card during the overlap: its checkpoint is signed by both, consistent
	// with the one before the rotation.
	e.publish(t, bob, newKeys(t, e2ee.SuiteX25519), nil, nil)
	if _, err := e.srv.PublishCheckpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	during := opens(t, e.client, map[string]error{oldKey: nil, newKey: nil})
	proof, err := e.client.GetConsistencyProof(context.Background(), &cardv1.GetConsistencyProofRequest{FromSize: before.Size, ToSize: during.Size})
	if err != nil {
		t.Fatal(err)
	}
	if err := kt.VerifyConsistency(before, during, proof.GetProof()); err != nil {
		t.Errorf("the checkpoint during the rotation does not extend the one before: %v", err)
	}

	for _, tc := range []struct {
		name, key string
		code      codes.Code
	}{
		{"no key", "", codes.InvalidArgument},
		{"not a key id", "NOT-AN-ID", codes.InvalidArgument},
		{"a malformed verifier key", "umbra+zz+zz", codes.InvalidArgument},
		{"a key the log never had", "aaaaaaaaaaaaaaaa", codes.NotFound},
		{"a verifier key the log never had", testSigner.VerifierKey(), codes.NotFound},
	} {
		t.Run("retire refused: "+tc.name, func(t *testing.T) {
			if _, err := e.client.RetireLogKey(as(testAdmin), &cardv1.RetireLogKeyRequest{Key: tc.key}); status.Code(err) != tc.code {
				t.Errorf("RetireLogKey(%q) = %v; want %v", tc.key, err, tc.code)
			}
		})
	}

	e.clock.Add(time.Minute)
	retiredAt := e.clock.Now()
	ret, err := e.client.RetireLogKey(as(testAdmin), &cardv1.RetireLogKeyRequest{Key: oldKey})
	if err != nil {
		t.Fatal(err)
	}
	if ret.GetKey().GetVerifierKey() != oldKey || !ret.GetKey().GetRetiredAt().AsTime().Equal(retiredAt) {
		t.Errorf("RetireLogKey = %v; want the old key retired at %s", ret, retiredAt)
	}
	// At once, with no new card event: the new key alone.
	opens(t, e.client, map[string]error{oldKey: kt.ErrUnknownLogKey, newKey: nil})
	if _, err := e.client.RetireLogKey(as(testAdmin), &cardv1.RetireLogKeyRequest{Key: newKey}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("retiring the only key that signs: %v; want FailedPrecondition", err)
	}

	e.stop()
	e2 := newEnv(t, envOptions{dir: e.dir, clock: e.clock})
	e2.publish(t, carol, newKeys(t, e2ee.SuiteX25519), nil, nil)
	if _, err := e2.srv.PublishCheckpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := opens(t, e2.client, map[string]error{oldKey: kt.ErrUnknownLogKey, newKey: nil})
	if after == nil || after.Size != during.Size+1 {
		t.Errorf("the checkpoint after a restart: %+v; want %d entries", after, during.Size+1)
	}
	keys, err := e2.client.GetLogKey(as(""), &cardv1.GetLogKeyRequest{})
	if err != nil || keys.GetVerifierKey() != newKey || len(keys.GetKeys()) != 2 || keys.GetKeys()[0].GetRetiredAt() == nil || keys.GetKeys()[1].GetRetiredAt() != nil {
		t.Errorf("GetLogKey after the rotation = %v, %v; want the new key, and the old one listed as retired", keys, err)
	}

	// The REST routes: admin only, and the same rules.
	if code, _ := e2.rest(t, http.MethodPost, "/v1/kt/log-keys:rotate", "", map[string]any{}); code != http.StatusUnauthorized {
		t.Errorf("POST /v1/kt/log-keys:rotate without a credential: %d; want 401", code)
	}
	code, body := e2.rest(t, http.MethodPost, "/v1/kt/log-keys:rotate", testAdmin, map[string]any{})
	if code != http.StatusOK {
		t.Fatalf("POST /v1/kt/log-keys:rotate: %d %v", code, body)
	}
	third, _ := body["key"].(map[string]any)["verifierKey"].(string)
	if code, body := e2.rest(t, http.MethodPost, "/v1/kt/log-keys:retire", testAdmin, map[string]any{"key": third}); code != http.StatusOK {
		t.Fatalf("POST /v1/kt/log-keys:retire of the key just added (abandoning the rotation): %d %v", code, body)
	}
	opens(t, e2.client, map[string]error{newKey: nil, third: kt.ErrUnknownLogKey})
	if code, _ := e2.rest(t, http.MethodPost, "/v1/kt/log-keys:retire", testAdmin, map[string]any{"key": third}); code != http.StatusBadRequest {
		t.Errorf("retiring a retired key over REST: %d; want 400 (failed precondition)", code)
	}
}

func mustVerifier(t testing.TB, vkey string) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
