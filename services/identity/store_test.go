package identity

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/v1"
)

func openTestStore(t *testing.T) (*BoltStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "identity.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func TestStoreAppsAndKeys(t *testing.T) {
	t.Parallel()
	s, path := openTestStore(t)
	app := &storagev1.AppRecord{AppId: "app_a", DisplayName: "A", CreatedAt: timestamppb.New(t0), IdentitySecret: []byte("secret")}
	k1 := &storagev1.AppKeyRecord{KeyId: "k1", AppId: "app_a", SecretHash: []byte("h1")}
	if err := s.CreateApp(app, k1); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateApp(app, &storagev1.AppKeyRecord{KeyId: "k9", AppId: "app_a"}); !errors.Is(err, errs.ErrExists) {
		t.Errorf("second CreateApp: %v, want ErrExists", err)
	}
	if _, err := s.AppKey("k9"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("key of the refused app was stored: %v", err)
	}
	if err := s.AddAppKey(&storagev1.AppKeyRecord{KeyId: "k2", AppId: "app_a"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAppKey(&storagev1.AppKeyRecord{KeyId: "k3", AppId: "app_missing"}); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("AddAppKey to a missing app: %v, want ErrNotFound", err)
	}
	if err := s.AddAppKey(&storagev1.AppKeyRecord{KeyId: "k1", AppId: "app_a"}); !errors.Is(err, errs.ErrExists) {
		t.Errorf("AddAppKey with a used id: %v, want ErrExists", err)
	}
	if _, err := s.RevokeAppKey("app_other", "k1", t0); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("revoking another app's key: %v, want ErrNotFound", err)
	}
	if _, err := s.RevokeAppKey("app_a", "k1", t0); err != nil {
		t.Fatal(err)
	}
	again, err := s.RevokeAppKey("app_a", "k1", t0.Add(time.Hour))
	if err != nil || !again.GetRevokedAt().AsTime().Equal(t0) {
		t.Errorf("second revocation moved revoked_at: %v, %v", again.GetRevokedAt(), err)
	}

	// Everything survives a reopen of the file.
	s.Close()
	s2, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, keys, err := s2.App("app_a")
	if err != nil {
		t.Fatal(err)
	}
	if got.GetDisplayName() != "A" || len(keys) != 2 {
		t.Fatalf("after reopen: app %v with %d keys, want A with 2", got, len(keys))
	}
	if keys[0].GetKeyId() != "k1" || keys[0].GetRevokedAt() == nil || keys[1].GetRevokedAt() != nil {
		t.Errorf("keys after reopen: %v", keys)
	}
	if _, _, err := s2.App("app_b"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("App of a missing app: %v", err)
	}
}

func TestStoreRevocationsKeepTheLatestAndFeedInOrder(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t)
	r1, err := s.Revoke("app_a", "u_x", t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke("app_a", "u_y", t0); err != nil {
		t.Fatal(err)
	}
	// An earlier time changes nothing and assigns no sequence.
	same, err := s.Revoke("app_a", "u_x", t0.Add(-time.Hour))
	if err != nil || same.GetSequence() != r1.GetSequence() || !same.GetBefore().AsTime().Equal(t0) {
		t.Fatalf("earlier revocation: %v, %v; want the one in force", same, err)
	}
	later, err := s.Revoke("app_a", "u_x", t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if later.GetSequence() != 3 {
		t.Errorf("later revocation has sequence %d, want 3", later.GetSequence())
	}
	// The feed has each identity once, at its latest sequence.
	recs, latest, err := s.Revocations(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if latest != 3 || len(recs) != 2 || recs[0].GetIdentity() != "u_y" || recs[1].GetIdentity() != "u_x" {
		t.Fatalf("feed = %v (latest %d); want u_y then u_x, latest 3", recs, latest)
	}
	recs, _, err = s.Revocations(2, 10)
	if err != nil || len(recs) != 1 || recs[0].GetSequence() != 3 {
		t.Errorf("feed after 2 = %v, %v", recs, err)
	}
	recs, _, err = s.Revocations(0, 1)
	if err != nil || len(recs) != 1 {
		t.Errorf("feed with limit 1 = %v, %v", recs, err)
	}
	// Apps are separate namespaces.
	if _, err := s.Revocation("app_b", "u_x"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("revocation leaked into another app: %v", err)
	}
}

func TestStoreSigningKeyRotation(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t)
	first := &storagev1.SigningKeyRecord{KeyId: "k1", Seed: make([]byte, 32), CreatedAt: timestamppb.New(t0)}
	if added, err := s.AddSigningKey(first, time.Time{}, true); err != nil || !added {
		t.Fatalf("first key: added=%v err=%v", added, err)
	}
	other := &storagev1.SigningKeyRecord{KeyId: "k0", Seed: make([]byte, 32), CreatedAt: timestamppb.New(t0)}
	if added, err := s.AddSigningKey(other, time.Time{}, true); err != nil || added {
		t.Fatalf("onlyIfNone with an active key: added=%v err=%v", added, err)
	}
	second := &storagev1.SigningKeyRecord{KeyId: "k2", Seed: make([]byte, 32), CreatedAt: timestamppb.New(t0.Add(time.Hour))}
	if _, err := s.AddSigningKey(second, t0.Add(25*time.Hour), false); err != nil {
		t.Fatal(err)
	}
	keys, err := s.SigningKeys()
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys = %v, %v", keys, err)
	}
	for _, k := range keys {
		switch k.GetKeyId() {
		case "k1":
			if k.GetRetiredAt() == nil || !k.GetVerifyUntil().AsTime().Equal(t0.Add(25*time.Hour)) {
				t.Errorf("k1 not retired until +25h: %v", k)
			}
		case "k2":
			if k.GetRetiredAt() != nil {
				t.Errorf("k2 retired: %v", k)
			}
		}
	}
	// A rotation after k1's last token expired deletes k1.
	third := &storagev1.SigningKeyRecord{KeyId: "k3", Seed: make([]byte, 32), CreatedAt: timestamppb.New(t0.Add(26 * time.Hour))}
	if _, err := s.AddSigningKey(third, t0.Add(50*time.Hour), false); err != nil {
		t.Fatal(err)
	}
	keys, _ = s.SigningKeys()
	ids := map[string]bool{}
	for _, k := range keys {
		ids[k.GetKeyId()] = true
	}
	if ids["k1"] || !ids["k2"] || !ids["k3"] {
		t.Errorf("after the second rotation keys are %v; want k2 and k3", ids)
	}
}
