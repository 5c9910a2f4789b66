package card

import (
	"bytes"
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

func openTestStore(t *testing.T) (*BoltStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "card.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// record is a card record as the server builds it; the store does not look inside the
// content, so no real card is needed here.
func record(app, identity string, n byte, previous []byte) *cardstoragev1.CardRecord {
	return &cardstoragev1.CardRecord{
		AppId:          app,
		Identity:       identity,
		CardId:         bytes.Repeat([]byte{n}, 32),
		Content:        []byte{n, n, n},
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
	return func(st PublishState) (*cardstoragev1.CardRecord, error) {
		*into = seen{st.Active, st.Same, st.Named, st.HasHistory}
		return nil, nil
	}
}

var (
	idAlice = "u_" + strings.Repeat("a", 32)
	idBob   = "u_" + strings.Repeat("b", 32)
)

func TestStorePublishSupersedesAndLogs(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t)
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

	evs, latest, err := s.Events(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if latest != 3 || len(evs) != 3 || !bytes.Equal(evs[1].GetPreviousCardId(), c1.GetCardId()) || evs[2].GetAppId() != "app_b" {
		t.Fatalf("events = %v (latest %d)", evs, latest)
	}
	if evs, _, _ := s.Events(1, 1); len(evs) != 1 || evs[0].GetSequence() != 2 {
		t.Errorf("events after 1, limit 1 = %v", evs)
	}
	if evs, latest, _ := s.Events(3, 10); len(evs) != 0 || latest != 3 {
		t.Errorf("events after the latest = %v (latest %d)", evs, latest)
	}
}

func TestStoreRefusedPublishWritesNothing(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t)
	c1 := record("app_a", idAlice, 1, nil)
	if _, _, err := s.Publish(c1, nil, allow(&seen{})); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s)
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
	if !maps.Equal(before, snapshot(t, s)) {
		t.Error("refused publications changed the store")
	}
}

func TestStoreRevoke(t *testing.T) {
	t.Parallel()
	s, _ := openTestStore(t)
	c1 := record("app_a", idAlice, 1, nil)
	if _, _, err := s.Publish(c1, nil, allow(&seen{})); err != nil {
		t.Fatal(err)
	}
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
	before := snapshot(t, s)
	again, changed, err := s.Revoke("app_a", idAlice, c1.GetCardId(), t0.Add(time.Hour))
	if err != nil || changed || !again.GetRevokedAt().AsTime().Equal(t0) || !maps.Equal(before, snapshot(t, s)) {
		t.Errorf("second revocation: %v changed=%v err=%v; want the first one, nothing written", again, changed, err)
	}
	// With no active card, a fresh card sees none.
	var got seen
	if _, _, err := s.Publish(record("app_a", idAlice, 2, nil), nil, allow(&got)); err != nil || got.active != nil || !got.history {
		t.Errorf("publish after revocation saw active %v, history %v (err %v); want no active card and a history", got.active, got.history, err)
	}
	if _, latest, _ := s.Events(0, 10); latest != 3 {
		t.Errorf("latest event %d; want 3 (publish, revoke, publish)", latest)
	}
}

// TestStoreResetRevokesAndSpendsGrantOnce: a reset card revokes the active card
// instead of superseding it, and its grant is spent, for good (over a reopen), until it
// has long expired.
func TestStoreResetRevokesAndSpendsGrantOnce(t *testing.T) {
	t.Parallel()
	s, path := openTestStore(t)
	c1 := record("app_a", idAlice, 1, nil)
	if _, _, err := s.Publish(c1, nil, allow(&seen{})); err != nil {
		t.Fatal(err)
	}
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
	s.Close()
	s, err = OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := snapshot(t, s)
	if _, _, err := s.Publish(reset(3), g1, allow(&seen{})); !errors.Is(err, errs.ErrPermission) || !strings.Contains(err.Error(), "reset grant grant1 was already used") {
		t.Errorf("the grant spent again: %v; want ErrPermission", err)
	}
	if !maps.Equal(before, snapshot(t, s)) {
		t.Error("the refused reset changed the store")
	}
	other := record("app_b", idAlice, 3, nil)
	other.KeyReset = true
	if _, _, err := s.Publish(other, g1, allow(&seen{})); err != nil {
		t.Errorf("app B's grant with the same id: %v", err)
	}
	// A later reset forgets grants that expired more than the margin ago.
	c4 := reset(4)
	c4.PublishedAt = timestamppb.New(g1.ExpiresAt.Add(spentGrantMargin + time.Second))
	if _, _, err := s.Publish(c4, &ResetGrantUse{ID: "grant2", ExpiresAt: c4.GetPublishedAt().AsTime().Add(time.Minute)}, allow(&seen{})); err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	for k := range snapshot(t, s) {
		if rest, ok := strings.CutPrefix(k, string(bucketGrants)+"/"); ok {
			kept[rest] = true
		}
	}
	if len(kept) != 1 || !kept["app_a\x00grant2"] {
		t.Errorf("spent grants kept = %v; want only app_a's grant2 (the others expired long ago)", kept)
	}
}

func TestStoreHistoryPagesNewestFirst(t *testing.T) {
	t.Parallel()
	s, path := openTestStore(t)
	var prev []byte
	for n := byte(1); n <= 5; n++ {
		rec := record("app_a", idAlice, n, prev)
		if _, _, err := s.Publish(rec, nil, allow(&seen{})); err != nil {
			t.Fatal(err)
		}
		prev = rec.GetCardId()
		// Bob's cards interleave with alice's in the sequence and in the bucket.
		if _, _, err := s.Publish(record("app_a", idBob, 100+n, nil), nil, allow(&seen{})); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s, err := OpenBoltStore(path) // and everything survives a reopen
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
}

func TestStoreServiceKeyIsCreatedOnce(t *testing.T) {
	t.Parallel()
	s, path := openTestStore(t)
	if _, err := s.ServiceKey(nil); err == nil {
		t.Error("an empty file returned a service key")
	}
	first := &cardstoragev1.ServiceKeyRecord{KeyId: "k1", Seed: bytes.Repeat([]byte{1}, 32), CreatedAt: timestamppb.New(t0)}
	got, err := s.ServiceKey(first)
	if err != nil || !proto.Equal(got, first) {
		t.Fatalf("first ServiceKey = %v, %v", got, err)
	}
	s.Close()
	s, err = OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err = s.ServiceKey(&cardstoragev1.ServiceKeyRecord{KeyId: "k2", Seed: bytes.Repeat([]byte{2}, 32)})
	if err != nil || !proto.Equal(got, first) {
		t.Errorf("after reopening, ServiceKey = %v, %v; want the first key", got, err)
	}
}
