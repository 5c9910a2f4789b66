package identity

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/storetest"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	identitystoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/identity/v1"
)

// The conformance suite: every behaviour of Store that the service relies on, run with
// the same code over each engine (TestBoltStore, TestPostgresStore), as SpiceDB runs
// one datastore suite over each of its datastores.

// storeEngine opens stores of one engine for the suite.
type storeEngine = storetest.Engine[Store]

func testStore(t *testing.T, e storeEngine) {
	storetest.Run(t, e, []storetest.Case[storeEngine]{
		{"AppsAndKeys", testAppsAndKeys},
		{"NothingHalfWritten", testNothingHalfWritten},
		{"RecordsRoundTrip", testRecordsRoundTrip},
		{"RevocationsKeepTheLatestAndFeedInOrder", testRevocations},
		{"SigningKeyRotation", testSigningKeyRotation},
		{"ConcurrentRevocationsFeedWithoutGaps", testConcurrentRevocations},
		{"ConcurrentFirstSigningKeys", testConcurrentFirstSigningKeys},
		{"ConcurrentRotations", testConcurrentRotations},
		{"ConcurrentCreateApp", testConcurrentCreateApp},
		{"ConcurrentRevokeAppKey", testConcurrentRevokeAppKey},
	})
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func testAppsAndKeys(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	app := &identitystoragev1.AppRecord{AppId: "app_a", DisplayName: "A", CreatedAt: timestamppb.New(t0), IdentitySecret: []byte("secret")}
	k1 := &identitystoragev1.AppKeyRecord{KeyId: "k1", AppId: "app_a", SecretHash: []byte("h1")}
	if err := s.CreateApp(app, k1); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateApp(app, &identitystoragev1.AppKeyRecord{KeyId: "k9", AppId: "app_a"}); !errors.Is(err, errs.ErrExists) {
		t.Errorf("second CreateApp: %v, want ErrExists", err)
	}
	if _, err := s.AppKey("k9"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("key of the refused app was stored: %v", err)
	}
	if err := s.AddAppKey(&identitystoragev1.AppKeyRecord{KeyId: "k2", AppId: "app_a"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAppKey(&identitystoragev1.AppKeyRecord{KeyId: "k3", AppId: "app_missing"}); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("AddAppKey to a missing app: %v, want ErrNotFound", err)
	}
	if err := s.AddAppKey(&identitystoragev1.AppKeyRecord{KeyId: "k1", AppId: "app_a"}); !errors.Is(err, errs.ErrExists) {
		t.Errorf("AddAppKey with a used id: %v, want ErrExists", err)
	}
	if _, err := s.RevokeAppKey("app_other", "k1", t0); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("revoking another app's key: %v, want ErrNotFound", err)
	}
	if _, err := s.RevokeAppKey("app_a", "k_missing", t0); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("revoking a missing key: %v, want ErrNotFound", err)
	}
	if _, err := s.RevokeAppKey("app_a", "k1", t0); err != nil {
		t.Fatal(err)
	}
	again, err := s.RevokeAppKey("app_a", "k1", t0.Add(time.Hour))
	if err != nil || !again.GetRevokedAt().AsTime().Equal(t0) {
		t.Errorf("second revocation moved revoked_at: %v, %v", again.GetRevokedAt(), err)
	}
	if _, err := s.AppKey("k_missing"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("AppKey of a missing key: %v, want ErrNotFound", err)
	}

	// Everything survives a reopen.
	s2 := reopen(t)
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

// testNothingHalfWritten: a refused write changes nothing.
func testNothingHalfWritten(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	if err := s.CreateApp(&identitystoragev1.AppRecord{AppId: "app_a"}, &identitystoragev1.AppKeyRecord{KeyId: "k1", AppId: "app_a"}); err != nil {
		t.Fatal(err)
	}
	// An app whose first key's id is taken is not created.
	err := s.CreateApp(&identitystoragev1.AppRecord{AppId: "app_b"}, &identitystoragev1.AppKeyRecord{KeyId: "k1", AppId: "app_b"})
	if !errors.Is(err, errs.ErrExists) {
		t.Errorf("CreateApp with a taken key id: %v, want ErrExists", err)
	}
	if _, _, err := s.App("app_b"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("the refused app was stored: %v", err)
	}
	if k, err := s.AppKey("k1"); err != nil || k.GetAppId() != "app_a" {
		t.Errorf("k1 after the refused CreateApp: %v, %v; want app_a's", k, err)
	}
	if _, err := s.Revocation("app_a", "u_x"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("Revocation with none: %v, want ErrNotFound", err)
	}
	recs, latest, err := s.Revocations(0, 10)
	if err != nil || len(recs) != 0 || latest != 0 {
		t.Errorf("empty feed: %v, latest %d, %v", recs, latest, err)
	}
}

// testRecordsRoundTrip: what is stored is read back exactly, nanoseconds and unknown
// fields' absence included.
func testRecordsRoundTrip(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	at := time.Date(2026, 11, 1, 12, 0, 0, 123456789, time.UTC)
	app := &identitystoragev1.AppRecord{AppId: "app_é", DisplayName: "Ünïcode \u2603", CreatedAt: timestamppb.New(at), IdentitySecret: []byte{0, 1, 2, 255}}
	key := &identitystoragev1.AppKeyRecord{KeyId: "k1", AppId: "app_é", SecretHash: []byte{0}, CreatedAt: timestamppb.New(at)}
	if err := s.CreateApp(app, key); err != nil {
		t.Fatal(err)
	}
	got, keys, err := s.App("app_é")
	if err != nil || !proto.Equal(got, app) || len(keys) != 1 || !proto.Equal(keys[0], key) {
		t.Errorf("App = %v %v (%v); want %v %v", got, keys, err, app, key)
	}
	rec, err := s.Revoke("app_é", "u_x", at)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Revocation("app_é", "u_x"); err != nil || !proto.Equal(got, rec) || !got.GetBefore().AsTime().Equal(at) {
		t.Errorf("Revocation = %v (%v), want %v", got, err, rec)
	}
	// One nanosecond later is later.
	later, err := s.Revoke("app_é", "u_x", at.Add(time.Nanosecond))
	if err != nil || later.GetSequence() != 2 {
		t.Errorf("a revocation 1 ns later: %v, %v; want sequence 2", later, err)
	}
}

func testRevocations(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	r1, err := s.Revoke("app_a", "u_x", t0)
	if err != nil {
		t.Fatal(err)
	}
	if r1.GetSequence() != 1 {
		t.Errorf("first revocation has sequence %d, want 1", r1.GetSequence())
	}
	if _, err := s.Revoke("app_a", "u_y", t0); err != nil {
		t.Fatal(err)
	}
	// An earlier or equal time changes nothing and assigns no sequence.
	for _, at := range []time.Time{t0.Add(-time.Hour), t0} {
		same, err := s.Revoke("app_a", "u_x", at)
		if err != nil || same.GetSequence() != r1.GetSequence() || !same.GetBefore().AsTime().Equal(t0) {
			t.Fatalf("revocation at %v: %v, %v; want the one in force", at, same, err)
		}
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
	if err != nil || len(recs) != 1 || recs[0].GetIdentity() != "u_y" {
		t.Errorf("feed with limit 1 = %v, %v", recs, err)
	}
	recs, latest, err = s.Revocations(3, 10)
	if err != nil || len(recs) != 0 || latest != 3 {
		t.Errorf("feed after the latest = %v (latest %d), %v", recs, latest, err)
	}
	// Apps are separate namespaces.
	if _, err := s.Revocation("app_b", "u_x"); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("revocation leaked into another app: %v", err)
	}
	if _, err := s.Revoke("app_b", "u_x", t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Revocation("app_a", "u_x"); err != nil || !r.GetBefore().AsTime().Equal(t0.Add(time.Hour)) {
		t.Errorf("another app's revocation changed app_a's: %v, %v", r, err)
	}
}

func testSigningKeyRotation(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	if keys, err := s.SigningKeys(); err != nil || len(keys) != 0 {
		t.Fatalf("keys of an empty store: %v, %v", keys, err)
	}
	first := &identitystoragev1.SigningKeyRecord{KeyId: "k1", Seed: make([]byte, 32), CreatedAt: timestamppb.New(t0)}
	if added, err := s.AddSigningKey(first, time.Time{}, true); err != nil || !added {
		t.Fatalf("first key: added=%v err=%v", added, err)
	}
	other := &identitystoragev1.SigningKeyRecord{KeyId: "k0", Seed: make([]byte, 32), CreatedAt: timestamppb.New(t0)}
	if added, err := s.AddSigningKey(other, time.Time{}, true); err != nil || added {
		t.Fatalf("onlyIfNone with an active key: added=%v err=%v", added, err)
	}
	second := &identitystoragev1.SigningKeyRecord{KeyId: "k2", Seed: make([]byte, 32), CreatedAt: timestamppb.New(t0.Add(time.Hour))}
	if _, err := s.AddSigningKey(second, t0.Add(25*time.Hour), false); err != nil {
		t.Fatal(err)
	}
	keys, err := s.SigningKeys()
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys = %v, %v", keys, err)
	}
	if keys[0].GetKeyId() != "k1" || keys[1].GetKeyId() != "k2" {
		t.Errorf("keys in order %s, %s; want k1, k2", keys[0].GetKeyId(), keys[1].GetKeyId())
	}
	for _, k := range keys {
		switch k.GetKeyId() {
		case "k1":
			if !k.GetRetiredAt().AsTime().Equal(t0.Add(time.Hour)) || !k.GetVerifyUntil().AsTime().Equal(t0.Add(25*time.Hour)) {
				t.Errorf("k1 not retired at +1h until +25h: %v", k)
			}
		case "k2":
			if k.GetRetiredAt() != nil {
				t.Errorf("k2 retired: %v", k)
			}
		}
	}
	// A rotation after k1's last token expired deletes k1.
	third := &identitystoragev1.SigningKeyRecord{KeyId: "k3", Seed: make([]byte, 32), CreatedAt: timestamppb.New(t0.Add(26 * time.Hour))}
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

// testConcurrentRevocations: writers on every replica revoke at once while a follower
// reads the feed as auth.RevocationFeed does (after the highest sequence it has seen).
// Sequences are 1..n without a gap, and the follower misses none: a sequence never
// becomes visible before an earlier one.
func testConcurrentRevocations(t *testing.T, e storeEngine) {
	const replicas, perWriter = 4, 15
	stores := e.Replicas(t, replicas)
	n := replicas * perWriter
	done := make(chan struct{})
	seen := map[string]uint64{}
	var follower sync.WaitGroup
	follow := func() error {
		var cursor uint64
		for _, v := range seen {
			cursor = max(cursor, v)
		}
		for {
			recs, _, err := stores[0].Revocations(cursor, 7)
			if err != nil {
				return err
			}
			if len(recs) == 0 {
				return nil
			}
			for _, r := range recs {
				if r.GetSequence() <= cursor {
					return fmt.Errorf("feed after %d gave sequence %d", cursor, r.GetSequence())
				}
				cursor = r.GetSequence()
				seen[r.GetIdentity()] = r.GetSequence()
			}
		}
	}
	var followErr error
	follower.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := follow(); err != nil {
				followErr = err
				return
			}
		}
	})
	var writers sync.WaitGroup
	errc := make(chan error, n)
	for w := range replicas {
		writers.Go(func() {
			for i := range perWriter {
				if _, err := stores[w].Revoke("app_a", fmt.Sprintf("u_%d_%d", w, i), t0); err != nil {
					errc <- err
				}
			}
		})
	}
	writers.Wait()
	close(done)
	follower.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if followErr != nil {
		t.Fatal(followErr)
	}
	if err := follow(); err != nil { // what came after the follower's last read
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Errorf("the follower saw %d identities, want %d: a revocation became visible after a later one and was skipped", len(seen), n)
	}
	recs, latest, err := stores[replicas-1].Revocations(0, n+10)
	if err != nil {
		t.Fatal(err)
	}
	if latest != uint64(n) || len(recs) != n {
		t.Fatalf("feed has %d records, latest %d; want %d and %d", len(recs), latest, n, n)
	}
	for i, r := range recs {
		if r.GetSequence() != uint64(i+1) {
			t.Fatalf("record %d has sequence %d: the sequences have a gap", i, r.GetSequence())
		}
	}
}

// atOnce runs do on every store at once, with the store's index, and waits for all.
func atOnce(stores []Store, do func(i int, s Store)) {
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() { do(i, s) })
	}
	wg.Wait()
}

// testConcurrentFirstSigningKeys: replicas starting together each offer a first signing
// key; one is stored, and it is the only active key.
func testConcurrentFirstSigningKeys(t *testing.T, e storeEngine) {
	stores := e.Replicas(t, 4)
	added := make(chan string, len(stores))
	atOnce(stores, func(i int, s Store) {
		key := &identitystoragev1.SigningKeyRecord{KeyId: fmt.Sprintf("k%d", i), Seed: make([]byte, 32), CreatedAt: timestamppb.New(t0)}
		ok, err := s.AddSigningKey(key, time.Time{}, true)
		if err != nil {
			t.Error(err)
		}
		if ok {
			added <- key.GetKeyId()
		}
	})
	close(added)
	var ids []string
	for id := range added {
		ids = append(ids, id)
	}
	keys, err := stores[0].SigningKeys()
	if err != nil {
		t.Fatal(err)
	}
	var stored []string
	for _, k := range keys {
		stored = append(stored, k.GetKeyId())
	}
	if len(ids) != 1 || len(keys) != 1 || keys[0].GetKeyId() != ids[0] || keys[0].GetRetiredAt() != nil {
		t.Errorf("added %v, stored %v; want one key, added once and active", ids, stored)
	}
}

// testConcurrentRotations: rotations at once on every replica leave exactly one active
// key, every other retired.
func testConcurrentRotations(t *testing.T, e storeEngine) {
	stores := e.Replicas(t, 4)
	if _, err := stores[0].AddSigningKey(&identitystoragev1.SigningKeyRecord{KeyId: "k_first", CreatedAt: timestamppb.New(t0)}, time.Time{}, true); err != nil {
		t.Fatal(err)
	}
	atOnce(stores, func(i int, s Store) {
		for j := range 3 {
			key := &identitystoragev1.SigningKeyRecord{KeyId: fmt.Sprintf("k%d_%d", i, j), CreatedAt: timestamppb.New(t0.Add(time.Minute))}
			if _, err := s.AddSigningKey(key, t0.Add(time.Hour), false); err != nil {
				t.Error(err)
			}
		}
	})
	keys, err := stores[0].SigningKeys()
	if err != nil {
		t.Fatal(err)
	}
	active := 0
	for _, k := range keys {
		if k.GetRetiredAt() == nil {
			active++
		}
	}
	if len(keys) != 13 || active != 1 {
		t.Errorf("%d keys, %d active; want 13 and 1", len(keys), active)
	}
}

// testConcurrentCreateApp: one app id created at once on every replica is created once.
func testConcurrentCreateApp(t *testing.T, e storeEngine) {
	stores := e.Replicas(t, 4)
	results := make(chan error, len(stores))
	atOnce(stores, func(i int, s Store) {
		results <- s.CreateApp(&identitystoragev1.AppRecord{AppId: "app_a", DisplayName: fmt.Sprint(i)},
			&identitystoragev1.AppKeyRecord{KeyId: fmt.Sprintf("k%d", i), AppId: "app_a"})
	})
	close(results)
	created := 0
	for err := range results {
		switch {
		case err == nil:
			created++
		case !errors.Is(err, errs.ErrExists):
			t.Errorf("CreateApp: %v, want nil or ErrExists", err)
		}
	}
	app, keys, err := stores[0].App("app_a")
	if err != nil {
		t.Fatal(err)
	}
	if created != 1 || len(keys) != 1 || keys[0].GetKeyId() != "k"+app.GetDisplayName() {
		t.Errorf("created %d times, app %v with keys %v; want once, with its own key only", created, app, keys)
	}
}

// testConcurrentRevokeAppKey: revocations of one key at once agree on when it was
// revoked: the first's time.
func testConcurrentRevokeAppKey(t *testing.T, e storeEngine) {
	stores := e.Replicas(t, 4)
	if err := stores[0].CreateApp(&identitystoragev1.AppRecord{AppId: "app_a"}, &identitystoragev1.AppKeyRecord{KeyId: "k1", AppId: "app_a"}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var times []time.Time
	atOnce(stores, func(i int, s Store) {
		k, err := s.RevokeAppKey("app_a", "k1", t0.Add(time.Duration(i)*time.Minute))
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		times = append(times, k.GetRevokedAt().AsTime())
		mu.Unlock()
	})
	stored, err := stores[0].AppKey("k1")
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range times {
		if !at.Equal(stored.GetRevokedAt().AsTime()) {
			t.Errorf("revocations answered %v; the key says %v", times, stored.GetRevokedAt().AsTime())
			break
		}
	}
	if !slices.ContainsFunc(times, func(at time.Time) bool { return at.Equal(stored.GetRevokedAt().AsTime()) }) {
		t.Errorf("stored revoked_at %v is none of the revocations' %v", stored.GetRevokedAt().AsTime(), times)
	}
}
