package card

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/storetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The conformance suite: every behaviour of Store that the service relies on, run with
// the same code over each engine (TestBoltStore, TestPostgresStore), as SpiceDB runs
// one datastore suite over each of its datastores.

// storeEngine opens stores of one engine for the suite.
type storeEngine struct {
	storetest.Engine[Store]
	// snapshot returns everything s stores, to prove that a refused call wrote
	// nothing.
	snapshot func(t *testing.T, s Store) map[string]string
}

func testStore(t *testing.T, e storeEngine) {
	storetest.Run(t, e, []storetest.Case[storeEngine]{
		{"PublishSupersedesAndLogs", testPublishSupersedesAndLogs},
		{"RefusedPublishWritesNothing", testRefusedPublishWritesNothing},
		{"Revoke", testRevoke},
		{"ResetRevokesAndSpendsGrantOnce", testResetSpendsGrantOnce},
		{"HistoryPagesNewestFirst", testHistoryPagesNewestFirst},
		{"RecordsRoundTrip", testRecordsRoundTrip},
		{"ServiceKeyIsCreatedOnce", testServiceKeyCreatedOnce},
		{"ServiceKeyRotationsChain", testServiceKeyRotation},
		{"KeyTransparencyFollowsTheFeed", testKeyTransparency},
		{"KeyTransparencyManyLookups", testManyLookups},
		{"LogKeyRotation", testLogKeyRotation},
		{"ConcurrentRotationsOfOneCard", testConcurrentRotationsOfOneCard},
		{"ConcurrentResetsSpendAGrantOnce", testConcurrentResets},
		{"ConcurrentFeedWithoutGaps", testConcurrentFeed},
		{"ConcurrentFirstServiceKeys", testConcurrentFirstKeys},
		{"ConcurrentServiceKeyRotations", testConcurrentKeyRotations},
		{"ConcurrentLogAppenders", testConcurrentAppenders},
		{"LogKeyRotationDuringAppends", testLogKeyRotationDuringAppends},
	})
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// testKey returns the service key made from seed byte n at at.
func testKey(t testing.TB, n byte, at time.Time) *cardstoragev1.ServiceKeyRecord {
	t.Helper()
	k, err := newServiceKey(bytes.NewReader(bytes.Repeat([]byte{n}, ed25519.SeedSize)), at)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// firstKey is the service key that the suite's stores hold (withKey) and its cards
// name.
var firstKey = func() *cardstoragev1.ServiceKeyRecord {
	k, err := newServiceKey(bytes.NewReader(bytes.Repeat([]byte{1}, ed25519.SeedSize)), t0)
	if err != nil {
		panic(err)
	}
	return k
}()

// withKey stores firstKey in s, as New does on first start, and returns s.
func withKey(t testing.TB, s Store) Store {
	t.Helper()
	if _, err := s.ServiceKey(proto.CloneOf(firstKey)); err != nil {
		t.Fatal(err)
	}
	return s
}

// rotation returns the next service key, made from seed byte n, with its rotation
// statement signed by current, at at.
func rotation(t testing.TB, current *cardstoragev1.ServiceKeyRecord, n byte, at time.Time) *cardstoragev1.ServiceKeyRecord {
	t.Helper()
	next := testKey(t, n, at)
	var err error
	next.RotationContent, next.RotationSignature, err = e2ee.SignServiceKeyRotation(ed25519.NewKeyFromSeed(current.GetSeed()), current.GetKeyId(), next.GetKeyId(), next.GetPublicKey(), at)
	if err != nil {
		t.Fatal(err)
	}
	return next
}

// record is a card record as the server builds it, counter-signed (by its key id) with
// firstKey; the store does not look inside the content, so no real card is needed
// here.
func record(app, identity string, n byte, previous []byte) *cardstoragev1.CardRecord {
	return &cardstoragev1.CardRecord{
		AppId:          app,
		Identity:       identity,
		CardId:         bytes.Repeat([]byte{n}, 32),
		Content:        []byte{n, n, n},
		ServiceKeyId:   firstKey.GetKeyId(),
		PublishedAt:    timestamppb.New(t0.Add(time.Duration(n) * time.Minute)),
		PreviousCardId: previous,
	}
}

// seen is what a PublishCheck was shown.
type seen struct {
	active, same, named *cardstoragev1.CardRecord
	history             bool
}

// allow is a PublishCheck that publishes anything, recording what it saw.
func allow(into *seen) PublishCheck {
	var mu sync.Mutex
	return func(st PublishState) (*cardstoragev1.CardRecord, error) {
		mu.Lock()
		defer mu.Unlock()
		*into = seen{st.Active, st.Same, st.Named, st.HasHistory}
		return nil, nil
	}
}

// rotationOnly is the heart of the rotation rule: a card must name the active card
// as its previous one, or be the identity's first.
func rotationOnly(next *cardstoragev1.CardRecord) PublishCheck {
	return func(st PublishState) (*cardstoragev1.CardRecord, error) {
		switch {
		case st.Same != nil:
			return nil, errs.Existsf("card published before")
		case len(next.GetPreviousCardId()) == 0 && st.Active == nil && !st.HasHistory:
			return nil, nil
		case st.Active == nil || !bytes.Equal(st.Active.GetCardId(), next.GetPreviousCardId()):
			return nil, errs.Conflictf("previous_card_id is not the active card")
		}
		return nil, nil
	}
}

// mustPublish publishes c, spending grant (nil for a card that is not a reset), with
// a check that allows anything, and fails the test if the store refuses.
func mustPublish(t testing.TB, s Store, c *cardstoragev1.CardRecord, grant *ResetGrantUse) {
	t.Helper()
	if _, _, err := s.Publish(c, grant, allow(&seen{})); err != nil {
		t.Fatal(err)
	}
}

// onReplicas makes n calls of f at once, call i on the replica stores[i%len(stores)],
// and returns when all have.
func onReplicas(stores []Store, n int, f func(i int, s Store)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { f(i, stores[i%len(stores)]) })
	}
	wg.Wait()
}

// winners counts the calls of a race that succeeded (a nil of results) and fails the
// test, with wrong (a format of the error), for each other call that lost is false for:
// a call that lost the race must be refused for that reason, not another.
func winners(t *testing.T, results []error, lost func(error) bool, wrong string) int {
	t.Helper()
	won := 0
	for _, err := range results {
		switch {
		case err == nil:
			won++
		case !lost(err):
			t.Errorf(wrong, err)
		}
	}
	return won
}

var (
	idAlice = "u_" + strings.Repeat("a", 32)
	idBob   = "u_" + strings.Repeat("b", 32)
)

func testPublishSupersedesAndLogs(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	withKey(t, s)
	var got seen
	c1 := record("app_a", idAlice, 1, nil)
	stored, written, err := s.Publish(c1, nil, allow(&got))
	if err != nil || !written {
		t.Fatalf("first publish: written=%v err=%v", written, err)
	}
	if got.active != nil || got.same != nil || got.named != nil || got.history {
		t.Errorf("check of a first card saw %+v; want nothing", got)
	}
	if stored.GetStatus() != cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_ACTIVE || stored.GetSequence() != 1 {
		t.Errorf("stored = %v; want ACTIVE with sequence 1", stored)
	}
	if c1.GetStatus() != cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_UNSPECIFIED {
		t.Error("Publish changed its argument")
	}

	c2 := record("app_a", idAlice, 2, c1.GetCardId())
	if _, _, err := s.Publish(c2, nil, allow(&got)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.active.GetCardId(), c1.GetCardId()) || !bytes.Equal(got.named.GetCardId(), c1.GetCardId()) || got.same != nil || !got.history {
		t.Errorf("check of a rotation saw %+v; want c1 active and named", got)
	}
	old, err := s.Card("app_a", c1.GetCardId())
	if err != nil {
		t.Fatal(err)
	}
	if old.GetStatus() != cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_SUPERSEDED || !bytes.Equal(old.GetSupersededBy(), c2.GetCardId()) ||
		!old.GetSupersededAt().AsTime().Equal(c2.GetPublishedAt().AsTime()) {
		t.Errorf("c1 after the rotation = %v", old)
	}
	// The active index holds c2's copy, which equals its record.
	active, err := s.ActiveCards("app_a", []string{idAlice})
	stored2, _ := s.Card("app_a", c2.GetCardId())
	if err != nil || len(active) != 1 || !proto.Equal(active[0], activeRecord(stored2)) {
		t.Errorf("active cards = %v, %v; want the copy of %v", active, err, stored2)
	}
	// The same card id in another app is another card.
	if _, _, err := s.Publish(record("app_b", idAlice, 1, nil), nil, allow(&got)); err != nil {
		t.Fatal(err)
	}
	if got.same != nil || got.active != nil {
		t.Errorf("app B's publish saw app A's cards: %+v", got)
	}
	if _, err := s.Card("app_c", c1.GetCardId()); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("a card of another app: %v, want ErrNotFound", err)
	}

	evs, latest, err := s.Events(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if latest != 3 || len(evs) != 3 || !bytes.Equal(evs[1].GetPreviousCardId(), c1.GetCardId()) || evs[2].GetAppId() != "app_b" {
		t.Fatalf("events = %v (latest %d)", evs, latest)
	}
	for i, ev := range evs {
		if ev.GetSequence() != uint64(i+1) || ev.GetKind() != cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_PUBLISHED {
			t.Errorf("event %d = %v", i, ev)
		}
	}
	if evs, _, _ := s.Events(1, 1); len(evs) != 1 || evs[0].GetSequence() != 2 {
		t.Errorf("events after 1, limit 1 = %v", evs)
	}
	if evs, latest, _ := s.Events(3, 10); len(evs) != 0 || latest != 3 {
		t.Errorf("events after the latest = %v (latest %d)", evs, latest)
	}
	if evs, latest, err := s.Events(^uint64(0), 10); err != nil || len(evs) != 0 || latest != 3 {
		t.Errorf("events after the largest sequence = %v (latest %d), %v", evs, latest, err)
	}
}

func testRefusedPublishWritesNothing(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	withKey(t, s)
	c1 := record("app_a", idAlice, 1, nil)
	mustPublish(t, s, c1, nil)
	before := e.snapshot(t, s)
	refusal := errs.Conflictf("no")
	if _, _, err := s.Publish(record("app_a", idAlice, 2, c1.GetCardId()), nil, func(PublishState) (*cardstoragev1.CardRecord, error) {
		return nil, refusal
	}); !errors.Is(err, refusal) {
		t.Errorf("refused publish returned %v", err)
	}
	// A check that answers with a stored record (a retry) writes nothing either.
	var answered *cardstoragev1.CardRecord
	got, written, err := s.Publish(c1, nil, func(st PublishState) (*cardstoragev1.CardRecord, error) {
		answered = st.Same
		return st.Same, nil
	})
	if err != nil || written || !proto.Equal(got, answered) || answered == nil {
		t.Errorf("retry: got %v written=%v err=%v", got, written, err)
	}
	// The store itself never stores one card id twice, whatever the check says.
	if _, _, err := s.Publish(c1, nil, allow(&seen{})); err == nil {
		t.Error("a card stored twice")
	}
	// A card counter-signed by a key that is not the current one is refused before
	// the check runs.
	stale := record("app_a", idBob, 3, nil)
	stale.ServiceKeyId = "retired-key"
	checked := false
	if _, _, err := s.Publish(stale, nil, func(PublishState) (*cardstoragev1.CardRecord, error) { checked = true; return nil, nil }); !errors.Is(err, ErrStaleServiceKey) || checked {
		t.Errorf("a card signed by another key than the current one: %v (checked %v); want ErrStaleServiceKey, unchecked", err, checked)
	}
	if !maps.Equal(before, e.snapshot(t, s)) {
		t.Error("refused publications changed the store")
	}
}

func testRevoke(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	withKey(t, s)
	c1 := record("app_a", idAlice, 1, nil)
	mustPublish(t, s, c1, nil)
	if _, _, err := s.Revoke("app_a", idBob, c1.GetCardId(), t0); !errors.Is(err, errs.ErrPermission) {
		t.Errorf("bob revoking alice's card: %v, want ErrPermission", err)
	}
	if _, _, err := s.Revoke("app_b", idAlice, c1.GetCardId(), t0); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("revoking in another app: %v, want ErrNotFound", err)
	}
	rec, changed, err := s.Revoke("app_a", idAlice, c1.GetCardId(), t0)
	if err != nil || !changed || rec.GetStatus() != cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_REVOKED || !rec.GetRevokedAt().AsTime().Equal(t0) {
		t.Fatalf("revoke = %v changed=%v err=%v", rec, changed, err)
	}
	if active, _ := s.ActiveCards("app_a", []string{idAlice}); len(active) != 0 {
		t.Errorf("alice still has an active card: %v", active)
	}
	before := e.snapshot(t, s)
	again, changed, err := s.Revoke("app_a", idAlice, c1.GetCardId(), t0.Add(time.Hour))
	if err != nil || changed || !again.GetRevokedAt().AsTime().Equal(t0) || !maps.Equal(before, e.snapshot(t, s)) {
		t.Errorf("second revocation: %v changed=%v err=%v; want the first one, nothing written", again, changed, err)
	}
	// With no active card, a fresh card sees none.
	var got seen
	if _, _, err := s.Publish(record("app_a", idAlice, 2, nil), nil, allow(&got)); err != nil || got.active != nil || !got.history {
		t.Errorf("publish after revocation saw active %v, history %v (err %v); want no active card and a history", got.active, got.history, err)
	}
	evs, latest, _ := s.Events(0, 10)
	if latest != 3 || len(evs) != 3 || evs[1].GetKind() != cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_REVOKED || !bytes.Equal(evs[1].GetCardId(), c1.GetCardId()) ||
		!evs[1].GetOccurredAt().AsTime().Equal(t0) {
		t.Errorf("events = %v (latest %d); want publish, revoke, publish", evs, latest)
	}
	// A superseded card revoked: the active card stays.
	c3 := record("app_a", idAlice, 3, bytes.Repeat([]byte{2}, 32))
	mustPublish(t, s, c3, nil)
	if _, changed, err := s.Revoke("app_a", idAlice, bytes.Repeat([]byte{2}, 32), t0); err != nil || !changed {
		t.Fatalf("revoking a superseded card: changed=%v %v", changed, err)
	}
	if active, _ := s.ActiveCards("app_a", []string{idAlice}); len(active) != 1 || !bytes.Equal(active[0].GetCardId(), c3.GetCardId()) {
		t.Errorf("active cards after revoking a superseded one = %v; want c3", active)
	}
}

// testResetSpendsGrantOnce: a reset card revokes the active card instead of
// superseding it, and its grant is spent, for good (over a reopen), until it has long
// expired.
func testResetSpendsGrantOnce(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	withKey(t, s)
	c1 := record("app_a", idAlice, 1, nil)
	mustPublish(t, s, c1, nil)
	reset := func(n byte) *cardstoragev1.CardRecord {
		r := record("app_a", idAlice, n, nil)
		r.KeyReset = true
		return r
	}
	g1 := &ResetGrantUse{ID: "grant1", ExpiresAt: t0.Add(10 * time.Minute)}
	// A reset card without its grant, or a grant with a card that is no reset, is a
	// programming error, refused before anything.
	if _, _, err := s.Publish(reset(2), nil, allow(&seen{})); err == nil {
		t.Error("a reset card was published without a grant")
	}
	if _, _, err := s.Publish(record("app_a", idAlice, 2, nil), g1, allow(&seen{})); err == nil {
		t.Error("a grant was spent on a card that is no reset")
	}

	c2 := reset(2)
	stored, written, err := s.Publish(c2, g1, allow(&seen{}))
	if err != nil || !written || !stored.GetKeyReset() {
		t.Fatalf("reset: %v written=%v err=%v", stored, written, err)
	}
	old, err := s.Card("app_a", c1.GetCardId())
	if err != nil {
		t.Fatal(err)
	}
	if old.GetStatus() != cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_REVOKED || !old.GetRevokedAt().AsTime().Equal(c2.GetPublishedAt().AsTime()) || len(old.GetSupersededBy()) != 0 {
		t.Errorf("the card a reset replaced = %v; want REVOKED at the reset, superseded by nothing", old)
	}
	active, err := s.ActiveCards("app_a", []string{idAlice})
	if err != nil || len(active) != 1 || !active[0].GetKeyReset() || !bytes.Equal(active[0].GetCardId(), c2.GetCardId()) {
		t.Errorf("active cards after the reset = %v, %v; want the reset card, marked", active, err)
	}
	evs, _, err := s.Events(0, 10)
	if err != nil || len(evs) != 3 {
		t.Fatalf("events = %v, %v; want publish, revoke, publish", evs, err)
	}
	if evs[1].GetKind() != cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_REVOKED || !bytes.Equal(evs[1].GetCardId(), c1.GetCardId()) ||
		evs[2].GetKind() != cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_PUBLISHED || !evs[2].GetKeyReset() || len(evs[2].GetPreviousCardId()) != 0 ||
		stored.GetSequence() != evs[2].GetSequence() {
		t.Errorf("events = %v; want c1 revoked, then the reset card published (marked, no previous card)", evs)
	}

	// The grant is spent, over a reopen too; another app's grant of the same id is not.
	s = reopen(t)
	before := e.snapshot(t, s)
	if _, _, err := s.Publish(reset(3), g1, allow(&seen{})); !errors.Is(err, errs.ErrPermission) || !strings.Contains(err.Error(), "reset grant grant1 was already used") {
		t.Errorf("the grant spent again: %v; want ErrPermission", err)
	}
	if !maps.Equal(before, e.snapshot(t, s)) {
		t.Error("the refused reset changed the store")
	}
	other := record("app_b", idAlice, 3, nil)
	other.KeyReset = true
	if _, _, err := s.Publish(other, g1, allow(&seen{})); err != nil {
		t.Errorf("app B's grant with the same id: %v", err)
	}
	// A later reset forgets grants that expired more than the margin ago: g1 can be
	// spent again (the server refuses it for its expiry by then), grant2 cannot.
	c4 := reset(4)
	c4.PublishedAt = timestamppb.New(g1.ExpiresAt.Add(spentGrantMargin + time.Second))
	g2 := &ResetGrantUse{ID: "grant2", ExpiresAt: c4.GetPublishedAt().AsTime().Add(time.Minute)}
	mustPublish(t, s, c4, g2)
	c5 := reset(5)
	c5.PublishedAt = c4.GetPublishedAt()
	if _, _, err := s.Publish(c5, g2, allow(&seen{})); !errors.Is(err, errs.ErrPermission) {
		t.Errorf("grant2 spent again: %v; want ErrPermission", err)
	}
	if _, _, err := s.Publish(c5, g1, allow(&seen{})); err != nil {
		t.Errorf("grant1, forgotten after its expiry: %v; want it accepted by the store", err)
	}
}

func testHistoryPagesNewestFirst(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	withKey(t, s)
	var prev []byte
	for n := byte(1); n <= 5; n++ {
		rec := record("app_a", idAlice, n, prev)
		mustPublish(t, s, rec, nil)
		prev = rec.GetCardId()
		// Bob's cards interleave with alice's in the sequence.
		mustPublish(t, s, record("app_a", idBob, 100+n, nil), nil)
	}
	s = reopen(t) // and everything survives a reopen
	var all []byte
	before := uint64(0)
	for pages := 0; ; pages++ {
		recs, more, err := s.History("app_a", idAlice, before, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			all = append(all, r.GetCardId()[0])
		}
		if !more {
			if pages != 2 {
				t.Errorf("%d pages of 2 for 5 cards, want 3", pages+1)
			}
			break
		}
		before = recs[len(recs)-1].GetSequence()
	}
	if !bytes.Equal(all, []byte{5, 4, 3, 2, 1}) {
		t.Errorf("history = %v; want 5 4 3 2 1", all)
	}
	if recs, more, err := s.History("app_a", idAlice, 0, 5); err != nil || more || len(recs) != 5 {
		t.Errorf("history of exactly the page size: %d cards, more=%v, %v; want 5 and no more", len(recs), more, err)
	}
	if recs, more, err := s.History("app_a", "u_"+strings.Repeat("c", 32), 0, 10); err != nil || more || len(recs) != 0 {
		t.Errorf("history of an identity without cards = %v, %v, %v", recs, more, err)
	}
	if recs, _, _ := s.History("app_b", idAlice, 0, 10); len(recs) != 0 {
		t.Errorf("alice's history leaked into app B: %v", recs)
	}
	active, err := s.ActiveCards("app_a", []string{idBob, "u_" + strings.Repeat("c", 32), idAlice})
	if err != nil || len(active) != 2 || active[0].GetIdentity() != idBob || active[1].GetCardId()[0] != 5 {
		t.Errorf("active cards = %v, %v; want bob's then alice's fifth", active, err)
	}
	if active, err := s.ActiveCards("app_b", []string{idBob, idAlice}); err != nil || len(active) != 0 {
		t.Errorf("active cards of another app = %v, %v; want none", active, err)
	}
}

// testRecordsRoundTrip: what is stored is read back exactly, nanoseconds included.
func testRecordsRoundTrip(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	withKey(t, s)
	at := time.Date(2026, 11, 1, 12, 0, 0, 123456789, time.UTC)
	c := record("app_é", idAlice, 9, nil)
	c.PublishedAt = timestamppb.New(at)
	c.SelfSignature = []byte{0, 1, 2, 255}
	c.EndorsementContent, c.EndorsementSignature = []byte{1}, []byte{2}
	c.ServiceSignature = bytes.Repeat([]byte{3}, 64)
	c.SigningPublicKey = bytes.Repeat([]byte{4}, 32)
	c.Suite = 2
	stored, _, err := s.Publish(c, nil, allow(&seen{}))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Card("app_é", c.GetCardId())
	if err != nil || !proto.Equal(got, stored) || !got.GetPublishedAt().AsTime().Equal(at) {
		t.Errorf("Card = %v (%v); want %v", got, err, stored)
	}
	active, err := s.ActiveCards("app_é", []string{idAlice})
	if err != nil || len(active) != 1 || !proto.Equal(active[0], activeRecord(stored)) {
		t.Errorf("ActiveCards = %v (%v); want %v", active, err, activeRecord(stored))
	}
	evs, _, err := s.Events(0, 1)
	if err != nil || len(evs) != 1 || !evs[0].GetOccurredAt().AsTime().Equal(at) {
		t.Errorf("event = %v (%v); want one at %v", evs, err, at)
	}
}

func testServiceKeyCreatedOnce(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	if _, err := s.ServiceKey(nil); err == nil {
		t.Error("an empty store returned a service key")
	}
	if _, err := s.ServiceKeys(); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("ServiceKeys of an empty store = %v; want ErrNotFound", err)
	}
	first := testKey(t, 1, t0)
	got, err := s.ServiceKey(first)
	if err != nil || got != first {
		t.Fatalf("first ServiceKey = %v, %v; want the candidate itself", got, err)
	}
	s = reopen(t)
	got, err = s.ServiceKey(testKey(t, 2, t0))
	if err != nil || !proto.Equal(got, first) {
		t.Errorf("after reopening, ServiceKey = %v, %v; want the first key", got, err)
	}
	if got, err := s.ServiceKey(nil); err != nil || !proto.Equal(got, first) {
		t.Errorf("ServiceKey(nil) = %v, %v; want the first key", got, err)
	}
}

func testServiceKeyRotation(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	if _, err := s.RotateServiceKey(rotation(t, firstKey, 2, t0), t0); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("RotateServiceKey without a current key = %v; want ErrNotFound", err)
	}
	first := proto.CloneOf(firstKey)
	first.PublicKey = nil // as written before rotations existed
	if _, err := s.ServiceKey(first); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, s, record("app_a", idAlice, 1, nil), nil) // published at t0 + 1 min
	before := e.snapshot(t, s)
	for _, tc := range []struct {
		name string
		next *cardstoragev1.ServiceKeyRecord
		at   time.Time
		want error
	}{
		{"the current key itself", first, t0.Add(time.Hour), errs.ErrConflict},
		{"a statement by another key", rotation(t, testKey(t, 9, t0), 2, t0.Add(time.Hour)), t0.Add(time.Hour), ErrStaleServiceKey},
		{"no statement", testKey(t, 2, t0.Add(time.Hour)), t0.Add(time.Hour), nil},
		{"a statement naming another new key", func() *cardstoragev1.ServiceKeyRecord {
			k := rotation(t, firstKey, 2, t0.Add(time.Hour))
			k.KeyId = "other"
			return k
		}(), t0.Add(time.Hour), nil},
		{"a statement that does not verify", func() *cardstoragev1.ServiceKeyRecord {
			k := rotation(t, firstKey, 2, t0.Add(time.Hour))
			k.RotationSignature = bytes.Repeat([]byte{1}, 64)
			return k
		}(), t0.Add(time.Hour), nil},
		{"dated before the latest publication", rotation(t, firstKey, 2, t0), t0, errs.ErrConflict},
	} {
		_, err := s.RotateServiceKey(tc.next, tc.at)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("rotation to %s: %v; want %v", tc.name, err, tc.want)
		}
	}
	if !maps.Equal(before, e.snapshot(t, s)) {
		t.Fatal("refused rotations changed the store")
	}

	current := firstKey
	var next []*cardstoragev1.ServiceKeyRecord
	for i := range 2 {
		at := t0.Add(time.Duration(i+1) * time.Hour)
		k := rotation(t, current, byte(2+i), at)
		retired, err := s.RotateServiceKey(k, at)
		if err != nil {
			t.Fatal(err)
		}
		if retired.GetKeyId() != current.GetKeyId() || len(retired.GetSeed()) != 0 || !retired.GetSupersededAt().AsTime().Equal(at) {
			t.Errorf("retired = %v; want %s without its seed, superseded at %v", retired, current.GetKeyId(), at)
		}
		next, current = append(next, k), k
	}
	// A card signed with a retired key is refused; with the current one it is not.
	if _, _, err := s.Publish(record("app_a", idBob, 2, nil), nil, allow(&seen{})); !errors.Is(err, ErrStaleServiceKey) {
		t.Errorf("a card signed with a retired key: %v; want ErrStaleServiceKey", err)
	}
	c := record("app_a", idBob, 2, nil)
	c.ServiceKeyId = current.GetKeyId()
	if _, _, err := s.Publish(c, nil, allow(&seen{})); err != nil {
		t.Errorf("a card signed with the current key: %v", err)
	}

	s = reopen(t)
	keys, err := s.ServiceKeys()
	if err != nil || len(keys) != 3 {
		t.Fatalf("ServiceKeys = %v, %v; want three", keys, err)
	}
	wantIDs := []string{first.GetKeyId(), next[0].GetKeyId(), next[1].GetKeyId()}
	for i, k := range keys {
		if k.GetKeyId() != wantIDs[i] {
			t.Errorf("key %d is %s; want %s (oldest first)", i, k.GetKeyId(), wantIDs[i])
		}
	}
	if !bytes.Equal(keys[0].GetPublicKey(), firstKey.GetPublicKey()) || len(keys[0].GetSeed()) != 0 || !keys[0].GetSupersededAt().AsTime().Equal(t0.Add(time.Hour)) {
		t.Errorf("the first retired key = %v; want its public key, no seed, superseded at the rotation", keys[0])
	}
	if !bytes.Equal(keys[1].GetRotationContent(), next[0].GetRotationContent()) {
		t.Errorf("the second key lost its rotation statement")
	}
	if !proto.Equal(keys[2], next[1]) {
		t.Errorf("the current key = %v; want %v", keys[2], next[1])
	}
	verifyKeyChain(t, keys)
}

// verifyKeyChain checks that each key after the first was introduced by a rotation
// statement of the key before it, as a client following the rotations does.
func verifyKeyChain(t *testing.T, keys []*cardstoragev1.ServiceKeyRecord) {
	t.Helper()
	for i := 1; i < len(keys); i++ {
		r, err := e2ee.VerifyServiceKeyRotation(keys[i-1].GetKeyId(), serviceKeyPublic(keys[i-1]), keys[i].GetRotationContent(), keys[i].GetRotationSignature())
		if err != nil || r.NewKeyID != keys[i].GetKeyId() {
			t.Errorf("key %d (%s) does not chain to key %d (%s): %v", i, keys[i].GetKeyId(), i-1, keys[i-1].GetKeyId(), err)
		}
	}
}

// testConcurrentRotationsOfOneCard: replicas rotating one identity's card at once, each
// from the same active card: one rotation wins, the others are refused by the
// rotation rule, and the identity has one active card.
func testConcurrentRotationsOfOneCard(t *testing.T, e storeEngine) {
	stores := e.Replicas(t, 2)
	withKey(t, stores[0])
	c1 := record("app_a", idAlice, 1, nil)
	if _, _, err := stores[0].Publish(c1, nil, rotationOnly(c1)); err != nil {
		t.Fatal(err)
	}
	const writers = 8
	errs := make([]error, writers)
	onReplicas(stores, writers, func(i int, s Store) {
		c := record("app_a", idAlice, byte(10+i), c1.GetCardId())
		_, _, errs[i] = s.Publish(c, nil, rotationOnly(c))
	})
	won := winners(t, errs, func(err error) bool {
		return strings.Contains(err.Error(), "previous_card_id is not the active card")
	}, "a losing rotation: %v; want the rotation rule's refusal")
	if won != 1 {
		t.Fatalf("%d of %d rotations from one card won; want 1", won, writers)
	}
	active, err := stores[1].ActiveCards("app_a", []string{idAlice})
	if err != nil || len(active) != 1 {
		t.Fatalf("active cards = %v, %v", active, err)
	}
	hist, _, err := stores[1].History("app_a", idAlice, 0, 100)
	if err != nil || len(hist) != 2 || !bytes.Equal(hist[0].GetCardId(), active[0].GetCardId()) ||
		hist[1].GetStatus() != cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_SUPERSEDED || !bytes.Equal(hist[1].GetSupersededBy(), active[0].GetCardId()) {
		t.Errorf("history = %v, %v; want c1 superseded by the one active card", hist, err)
	}
	if _, latest, _ := stores[0].Events(0, 0); latest != 2 {
		t.Errorf("latest event %d; want 2", latest)
	}
}

// testConcurrentResets: a reset grant used by several replicas at once is spent once.
func testConcurrentResets(t *testing.T, e storeEngine) {
	stores := e.Replicas(t, 2)
	withKey(t, stores[0])
	mustPublish(t, stores[0], record("app_a", idAlice, 1, nil), nil)
	grant := &ResetGrantUse{ID: "one-grant", ExpiresAt: t0.Add(time.Hour)}
	const writers = 8
	results := make([]error, writers)
	onReplicas(stores, writers, func(i int, s Store) {
		c := record("app_a", idAlice, byte(10+i), nil)
		c.KeyReset = true
		_, _, results[i] = s.Publish(c, grant, allow(&seen{}))
	})
	won := winners(t, results, func(err error) bool { return errors.Is(err, errs.ErrPermission) },
		"a reset refused with %v; want ErrPermission")
	if won != 1 {
		t.Fatalf("the grant was spent %d times; want once", won)
	}
	if _, latest, _ := stores[1].Events(0, 0); latest != 3 {
		t.Errorf("latest event %d; want 3 (publish, and the one reset's revoke and publish)", latest)
	}
}

// testConcurrentFeed: publications and revocations on several replicas at once get
// every sequence once, and a follower reading the feed meanwhile never sees a sequence
// before every earlier one: what it has read up to n is all there will ever be up to n.
func testConcurrentFeed(t *testing.T, e storeEngine) {
	stores := e.Replicas(t, 2)
	withKey(t, stores[0])
	const writers, each = 4, 10
	done := make(chan struct{})
	var follower sync.WaitGroup
	var followed []*cardstoragev1.CardEventRecord
	var followErr error
	follower.Go(func() {
		var after uint64
		for {
			select {
			case <-done:
				return
			default:
			}
			evs, _, err := stores[1].Events(after, 7)
			if err != nil {
				followErr = err
				return
			}
			for _, ev := range evs {
				if ev.GetSequence() != after+1 {
					followErr = fmt.Errorf("the follower read event %d after event %d", ev.GetSequence(), after)
					return
				}
				after = ev.GetSequence()
				followed = append(followed, ev)
			}
		}
	})
	onReplicas(stores, writers, func(w int, s Store) {
		for i := range each {
			c := record("app_a", fmt.Sprintf("u_w%d_%d", w, i), byte(w*each+i+1), nil)
			if _, _, err := s.Publish(c, nil, allow(&seen{})); err != nil {
				t.Error(err)
				return
			}
			if i%3 == 0 {
				if _, _, err := s.Revoke("app_a", c.GetIdentity(), c.GetCardId(), t0); err != nil {
					t.Error(err)
					return
				}
			}
		}
	})
	close(done)
	follower.Wait()
	if followErr != nil {
		t.Fatal(followErr)
	}
	const total = writers*each + writers*4 // every card, and the revocations of i = 0, 3, 6, 9
	evs, latest, err := stores[0].Events(0, 1000)
	if err != nil || latest != total || len(evs) != total {
		t.Fatalf("feed: %d events, latest %d, %v; want %d", len(evs), latest, err, total)
	}
	for i, ev := range evs {
		if ev.GetSequence() != uint64(i+1) {
			t.Fatalf("event %d has sequence %d", i, ev.GetSequence())
		}
		if i < len(followed) && !proto.Equal(followed[i], ev) {
			t.Errorf("the follower read event %d as %v; it is %v", i+1, followed[i], ev)
		}
		if ev.GetKind() == cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_PUBLISHED {
			c, err := stores[1].Card("app_a", ev.GetCardId())
			if err != nil || c.GetSequence() != ev.GetSequence() {
				t.Errorf("card of event %d: sequence %d, %v", ev.GetSequence(), c.GetSequence(), err)
			}
		}
	}
}

// testConcurrentFirstKeys: replicas starting together each offer a service key; one is
// kept, and every replica uses it.
func testConcurrentFirstKeys(t *testing.T, e storeEngine) {
	stores := e.Replicas(t, 3)
	const starts = 6
	got := make([]*cardstoragev1.ServiceKeyRecord, starts)
	logKeys := make([]*cardstoragev1.LogKeyRecord, starts)
	onReplicas(stores, starts, func(i int, s Store) {
		k, err := s.ServiceKey(testKey(t, byte(i+1), t0))
		if err != nil {
			t.Error(err)
			return
		}
		got[i] = k
		lk, err := s.LogKey(&cardstoragev1.LogKeyRecord{KeyId: fmt.Sprint("lk", i), Seed: bytes.Repeat([]byte{byte(i)}, 32), Origin: "o"})
		if err != nil {
			t.Error(err)
			return
		}
		logKeys[i] = lk
	})
	for i := range starts {
		if !proto.Equal(got[i], got[0]) || !proto.Equal(logKeys[i], logKeys[0]) {
			t.Fatalf("replica start %d uses service key %s and log key %s; start 0 %s and %s", i, got[i].GetKeyId(), logKeys[i].GetKeyId(), got[0].GetKeyId(), logKeys[0].GetKeyId())
		}
	}
	if keys, err := stores[0].ServiceKeys(); err != nil || len(keys) != 1 {
		t.Errorf("ServiceKeys = %v, %v; want the one key", keys, err)
	}
}

// testConcurrentKeyRotations: replicas rotating the service key at once, each from the
// key it knows: each rotation is signed by the key it retires, whichever replica made
// it (a replica whose key is stale is refused, reloads and signs again), so the keys
// chain from the first to the last.
func testConcurrentKeyRotations(t *testing.T, e storeEngine) {
	stores := e.Replicas(t, 2)
	withKey(t, stores[0])
	const rotators, each = 4, 3
	var mu sync.Mutex
	stale, seed := 0, byte(10)
	onReplicas(stores, rotators, func(_ int, s Store) {
		known, err := s.ServiceKey(nil)
		if err != nil {
			t.Error(err)
			return
		}
		for done := 0; done < each; {
			mu.Lock()
			seed++
			n := seed
			mu.Unlock()
			at := time.Now()
			_, err := s.RotateServiceKey(rotation(t, known, n, at), at)
			switch {
			case err == nil:
				done++
			case errors.Is(err, ErrStaleServiceKey):
				mu.Lock()
				stale++
				mu.Unlock()
			default:
				t.Error(err)
				return
			}
			if known, err = s.ServiceKey(nil); err != nil {
				t.Error(err)
				return
			}
		}
	})
	keys, err := stores[1].ServiceKeys()
	if err != nil || len(keys) != 1+rotators*each {
		t.Fatalf("%d keys, %v; want %d", len(keys), err, 1+rotators*each)
	}
	verifyKeyChain(t, keys)
	t.Logf("%d rotations refused for a stale key", stale)
}
