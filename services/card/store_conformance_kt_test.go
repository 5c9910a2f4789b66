package card

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The conformance suite's key transparency cases (testStore lists them): the log and
// the map follow the feed, lookups prove, log keys rotate, appenders on several
// replicas agree.

// testSigner signs checkpoints with a log key of the tests'.
var testSigner = func() *kt.LogSigner {
	s, err := kt.NewLogSigner("umbra.test/kt", bytes.Repeat([]byte{7}, ed25519.SeedSize))
	if err != nil {
		panic(err)
	}
	return s
}()

func signTest(c *kt.Checkpoint, _ []*cardstoragev1.LogKeyRecord) ([]byte, error) {
	c.Origin = testSigner.Name()
	return kt.SignCheckpoint(c, testSigner)
}

func openCheckpoint(t testing.TB, rec *cardstoragev1.CheckpointRecord) *kt.Checkpoint {
	t.Helper()
	cp, err := kt.OpenCheckpoint(rec.GetSignedNote(), testSigner.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != rec.GetSize() || !bytes.Equal(cp.LogRoot[:], rec.GetLogRoot()) || !bytes.Equal(cp.MapRoot[:], rec.GetMapRoot()) {
		t.Fatalf("checkpoint record %v does not match its signed note %+v", rec, cp)
	}
	return cp
}

// replayLog recomputes the log and the map from s's entries alone, as an auditor does,
// and fails unless they give cp's roots. It returns the entries.
func replayLog(t *testing.T, s Store, cp *kt.Checkpoint) [][]byte {
	t.Helper()
	m := kt.NewMemory()
	var got *kt.Checkpoint
	for start := uint64(0); start < cp.Size; {
		entries, err := s.LogEntries(start, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 {
			t.Fatalf("the log has no entry %d, and its checkpoint counts %d", start, cp.Size)
		}
		entries = entries[:min(uint64(len(entries)), cp.Size-start)]
		if got, err = m.Append(cp.Origin, entries...); err != nil {
			t.Fatal(err)
		}
		start += uint64(len(entries))
	}
	if got == nil {
		got, _ = m.Append(cp.Origin)
	}
	if *got != *cp {
		t.Fatalf("replaying the log's %d entries gives log root %x and map root %x; the checkpoint says %x and %x", cp.Size, got.LogRoot, got.MapRoot, cp.LogRoot, cp.MapRoot)
	}
	return m.Leaves
}

// checkLogIsFeed fails unless entry i of the log is the leaf of event i+1, for every
// entry up to the checkpoint's size.
func checkLogIsFeed(t *testing.T, s Store, entries [][]byte) {
	t.Helper()
	evs, _, err := s.Events(0, len(entries)+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) < len(entries) {
		t.Fatalf("the log has %d entries and the feed %d events", len(entries), len(evs))
	}
	for i, entry := range entries {
		want, err := eventLeaf(evs[i])
		if err != nil || !bytes.Equal(entry, want) {
			t.Fatalf("log entry %d is not the leaf of event %d (%v)", i, evs[i].GetSequence(), err)
		}
	}
}

func testKeyTransparency(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	withKey(t, s)
	// The log key is made once.
	lk := &cardstoragev1.LogKeyRecord{KeyId: "lk1", Seed: bytes.Repeat([]byte{7}, 32), Origin: testSigner.Name(), CreatedAt: timestamppb.New(t0)}
	if _, err := s.LogKey(nil); err == nil {
		t.Error("an empty store returned a log key")
	}
	if got, err := s.LogKey(lk); err != nil || got != lk {
		t.Fatalf("first LogKey = %v, %v; want the candidate", got, err)
	}
	if got, err := s.LogKey(&cardstoragev1.LogKeyRecord{KeyId: "lk2", Seed: bytes.Repeat([]byte{8}, 32), Origin: "other"}); err != nil || !proto.Equal(got, lk) {
		t.Errorf("second LogKey = %v, %v; want the first", got, err)
	}
	// Before the first checkpoint.
	if _, err := s.LatestCheckpoint(); !errors.Is(err, errs.ErrUnavailable) {
		t.Errorf("LatestCheckpoint before any: %v; want ErrUnavailable", err)
	}
	if _, _, err := s.ProvedCards("app_a", []string{idAlice}); !errors.Is(err, errs.ErrUnavailable) {
		t.Errorf("ProvedCards before any checkpoint: %v; want ErrUnavailable", err)
	}
	empty, n, err := s.AppendLog(10, t0, signTest)
	if err != nil || n != 0 || empty.GetSize() != 0 {
		t.Fatalf("the first append: %v, %d, %v; want the empty log's checkpoint", empty, n, err)
	}
	if cp := openCheckpoint(t, empty); cp.LogRoot != kt.EmptyLogRoot || cp.MapRoot != kt.EmptyMapHash {
		t.Errorf("empty checkpoint %+v", cp)
	}
	// Nothing new: nothing written, the latest checkpoint returned.
	before := e.snapshot(t, s)
	again, n, err := s.AppendLog(10, t0.Add(time.Hour), signTest)
	if err != nil || n != 0 || !proto.Equal(again, empty) || !maps.Equal(before, e.snapshot(t, s)) {
		t.Errorf("an append without new events: %v, %d, %v (wrote %v); want the latest checkpoint, nothing written", again, n, err, !maps.Equal(before, e.snapshot(t, s)))
	}

	// Publications, a rotation, a reset and a revocation, appended in small batches.
	mustPublish(t, s, record("app_a", idAlice, 1, nil), nil)
	mustPublish(t, s, record("app_a", idBob, 2, nil), nil)
	mustPublish(t, s, record("app_b", idAlice, 3, nil), nil)
	mustPublish(t, s, record("app_a", idAlice, 4, bytes.Repeat([]byte{1}, 32)), nil)
	var checkpoints []*kt.Checkpoint
	checkpoints = append(checkpoints, openCheckpoint(t, empty))
	for _, want := range []uint64{2, 4} {
		rec, n, err := s.AppendLog(2, t0, signTest)
		if err != nil || n != 2 || rec.GetSize() != want {
			t.Fatalf("append of 2: %d appended, size %d, %v; want size %d", n, rec.GetSize(), err, want)
		}
		checkpoints = append(checkpoints, openCheckpoint(t, rec))
	}
	reset := record("app_a", idBob, 5, nil)
	reset.KeyReset = true
	mustPublish(t, s, reset, &ResetGrantUse{ID: "g", ExpiresAt: t0.Add(time.Hour)})
	if _, _, err := s.Revoke("app_b", idAlice, bytes.Repeat([]byte{3}, 32), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	s = reopen(t) // the log survives a reopen
	rec, n, err := s.AppendLog(100, t0, signTest)
	if err != nil || n != 3 || rec.GetSize() != 7 {
		t.Fatalf("append of the rest: %d appended, size %d, %v; want 3 and 7", n, rec.GetSize(), err)
	}
	latest := openCheckpoint(t, rec)
	checkpoints = append(checkpoints, latest)
	if got, err := s.LatestCheckpoint(); err != nil || !proto.Equal(got, rec) {
		t.Errorf("LatestCheckpoint = %v, %v; want %v", got, err, rec)
	}
	entries := replayLog(t, s, latest)
	checkLogIsFeed(t, s, entries)
	if got, err := s.LogEntries(5, 10); err != nil || len(got) != 2 || !bytes.Equal(got[0], entries[5]) {
		t.Errorf("LogEntries(5, 10) = %d entries, %v; want the last 2", len(got), err)
	}

	// Every checkpoint extends the one before, and every entry is in each.
	for i := 1; i < len(checkpoints); i++ {
		older, newer := checkpoints[i-1], checkpoints[i]
		p, err := s.ConsistencyProof(older.Size, newer.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := kt.VerifyConsistency(older, newer, p); err != nil {
			t.Errorf("checkpoint %d to %d: %v", older.Size, newer.Size, err)
		}
	}
	for _, cp := range checkpoints[1:] {
		for i := range cp.Size {
			leaf, p, err := s.InclusionProof(i, cp.Size)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(leaf, entries[i]) {
				t.Errorf("InclusionProof(%d, %d) gives another entry", i, cp.Size)
			}
			if err := kt.VerifyInclusion(cp, i, leaf, p); err != nil {
				t.Errorf("entry %d in the checkpoint of %d: %v", i, cp.Size, err)
			}
		}
	}
	if _, _, err := s.InclusionProof(0, 8); !errors.Is(err, errs.ErrOutOfRange) {
		t.Errorf("an inclusion proof in a log larger than the log: %v; want ErrOutOfRange", err)
	}
	if _, err := s.ConsistencyProof(2, 8); !errors.Is(err, errs.ErrOutOfRange) {
		t.Errorf("a consistency proof to a log larger than the log: %v; want ErrOutOfRange", err)
	}

	// Lookups: alice of app A (rotated), bob (reset), alice of app B (revoked), and
	// an identity without events; one twice.
	carol := "u_" + strings.Repeat("c", 32)
	cp, proved, err := s.ProvedCards("app_a", []string{idAlice, idBob, carol, idAlice})
	if err != nil || !proto.Equal(cp, rec) || len(proved) != 4 {
		t.Fatalf("ProvedCards = %v, %d results, %v", cp, len(proved), err)
	}
	wantCards := []byte{4, 5, 0, 4}
	for i, id := range []string{idAlice, idBob, carol, idAlice} {
		l, err := kt.VerifyLookup(latest, "app_a", id, proved[i].Proof)
		if err != nil {
			t.Errorf("lookup %d: %v", i, err)
			continue
		}
		switch want := wantCards[i]; {
		case want == 0 && (proved[i].Card != nil || l.Value != nil):
			t.Errorf("lookup of an identity without cards: %v, %v", proved[i].Card, l.Value)
		case want != 0 && (proved[i].Card == nil || proved[i].Card.GetCardId()[0] != want || !bytes.Equal(l.CardID(), proved[i].Card.GetCardId())):
			t.Errorf("lookup %d gives card %x (map %x); want card %d", i, proved[i].Card.GetCardId(), l.CardID(), want)
		}
	}
	_, proved, err = s.ProvedCards("app_b", []string{idAlice})
	if err != nil || proved[0].Card != nil {
		t.Fatalf("lookup of a revoked identity: %v, %v; want no card", proved, err)
	}
	if l, err := kt.VerifyLookup(latest, "app_b", idAlice, proved[0].Proof); err != nil || l.Value == nil || l.CardID() != nil {
		t.Errorf("lookup of a revoked identity: %+v, %v; want an entry naming no card", l, err)
	}
}

// testConcurrentAppenders: the key transparency log's followers on several replicas,
// appending while cards are published on each: every event is in the log once, in
// order (entry i is event i+1), every checkpoint extends the ones before, and the map
// is the one recomputed from the log alone.
func testConcurrentAppenders(t *testing.T, e storeEngine) {
	stores := e.Replicas(t, 2)
	withKey(t, stores[0])
	const writers, each = 4, 8
	done := make(chan struct{})
	var mu sync.Mutex
	var recs []*cardstoragev1.CheckpointRecord
	var appenders sync.WaitGroup
	for a := range 4 {
		appenders.Go(func() {
			s := stores[a%len(stores)]
			for {
				rec, _, err := s.AppendLog(3, t0, signTest)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				recs = append(recs, rec)
				mu.Unlock()
				select {
				case <-done:
					return
				default:
				}
			}
		})
	}
	// The writers publish on both replicas while the appenders run.
	onReplicas(stores, writers, func(w int, s Store) {
		var prev []byte
		for i := range each {
			// Each writer rotates one identity's card: the map's values change.
			c := record("app_a", fmt.Sprintf("u_w%d", w), byte(w*each+i+1), prev)
			if _, _, err := s.Publish(c, nil, allow(&seen{})); err != nil {
				t.Error(err)
				return
			}
			prev = c.GetCardId()
		}
	})
	close(done)
	appenders.Wait()
	for {
		_, n, err := stores[1].AppendLog(100, t0, signTest)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	final, err := stores[0].LatestCheckpoint()
	if err != nil || final.GetSize() != writers*each {
		t.Fatalf("latest checkpoint of %d entries (%v); want %d", final.GetSize(), err, writers*each)
	}
	latest := openCheckpoint(t, final)
	entries := replayLog(t, stores[1], latest)
	checkLogIsFeed(t, stores[0], entries)
	// One checkpoint per size, each extending every smaller one.
	bySize := map[uint64]*cardstoragev1.CheckpointRecord{}
	for _, r := range recs {
		if other := bySize[r.GetSize()]; other != nil && !bytes.Equal(other.GetLogRoot(), r.GetLogRoot()) {
			t.Fatalf("two checkpoints of %d entries with different roots: the log forked", r.GetSize())
		}
		bySize[r.GetSize()] = r
	}
	sizes := slices.Sorted(maps.Keys(bySize))
	for _, size := range sizes {
		cp := openCheckpoint(t, bySize[size])
		p, err := stores[0].ConsistencyProof(size, latest.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := kt.VerifyConsistency(cp, latest, p); err != nil {
			t.Errorf("checkpoint of %d entries to the latest: %v", size, err)
		}
	}
	// Each writer's identity maps to its last card.
	ids := make([]string, writers)
	for w := range ids {
		ids[w] = fmt.Sprintf("u_w%d", w)
	}
	_, proved, err := stores[1].ProvedCards("app_a", ids)
	if err != nil {
		t.Fatal(err)
	}
	for w, pc := range proved {
		l, err := kt.VerifyLookup(latest, "app_a", ids[w], pc.Proof)
		if err != nil || pc.Card == nil || pc.Card.GetCardId()[0] != byte(w*each+each) || !bytes.Equal(l.CardID(), pc.Card.GetCardId()) {
			t.Errorf("lookup of writer %d: card %x, %v; want its last", w, pc.Card.GetCardId(), err)
		}
	}
}

// testManyLookups: a batch of lookups in a map deep enough to span several levels of
// tiles (a few hundred identities), some with cards, some rotated, some revoked, some
// without any, each proved at the latest checkpoint.
func testManyLookups(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	withKey(t, s)
	const n = 400
	ids := make([]string, 0, n+20)
	want := map[string][]byte{}
	for i := range n {
		id := fmt.Sprintf("u_many_%03d", i)
		c := record("app_a", id, 0, nil)
		c.CardId = bytes.Repeat([]byte{byte(i), byte(i >> 8), 1}, 11)[:32]
		mustPublish(t, s, c, nil)
		want[id] = c.GetCardId()
		switch i % 10 {
		case 3: // rotated
			next := record("app_a", id, 0, c.GetCardId())
			next.CardId = bytes.Repeat([]byte{byte(i), byte(i >> 8), 2}, 11)[:32]
			mustPublish(t, s, next, nil)
			want[id] = next.GetCardId()
		case 7: // revoked
			if _, _, err := s.Revoke("app_a", id, c.GetCardId(), t0); err != nil {
				t.Fatal(err)
			}
			want[id] = nil
		}
		ids = append(ids, id)
		if i%128 == 127 {
			if _, _, err := s.AppendLog(1000, t0, signTest); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("u_none_%02d", i))
	}
	rec, _, err := s.AppendLog(1000, t0, signTest)
	if err != nil {
		t.Fatal(err)
	}
	replayLog(t, s, openCheckpoint(t, rec))
	lookups := func(rec *cardstoragev1.CheckpointRecord) {
		t.Helper()
		cp := openCheckpoint(t, rec)
		got, proved, err := s.ProvedCards("app_a", ids)
		if err != nil || !proto.Equal(got, rec) || len(proved) != len(ids) {
			t.Fatalf("ProvedCards: %v, %d results, %v", got, len(proved), err)
		}
		for i, id := range ids {
			l, err := kt.VerifyLookup(cp, "app_a", id, proved[i].Proof)
			if err != nil {
				t.Fatalf("lookup of %s at %d entries: %v", id, cp.Size, err)
			}
			if !bytes.Equal(l.CardID(), want[id]) || !bytes.Equal(proved[i].Card.GetCardId(), want[id]) {
				t.Errorf("lookup of %s at %d entries proves card %x (returned %x); want %x", id, cp.Size, l.CardID(), proved[i].Card.GetCardId(), want[id])
			}
		}
	}
	// Twice at one checkpoint: the second batch reads the trees' top levels that the
	// first one read (an engine may keep them for the checkpoint).
	lookups(rec)
	lookups(rec)
	// A new checkpoint changes the top levels: lookups prove at it, not from what
	// was read at the previous one.
	for i := 0; i < n; i += 9 {
		id := ids[i]
		c := record("app_a", id, 0, nil)
		c.CardId = bytes.Repeat([]byte{byte(i), byte(i >> 8), 3}, 11)[:32]
		if want[id] != nil {
			c = record("app_a", id, 0, want[id])
			c.CardId = bytes.Repeat([]byte{byte(i), byte(i >> 8), 4}, 11)[:32]
		}
		mustPublish(t, s, c, nil)
		want[id] = c.GetCardId()
	}
	if rec, _, err = s.AppendLog(1000, t0, signTest); err != nil {
		t.Fatal(err)
	}
	lookups(rec)
}

// testLogKey returns the log key made from seed byte n at at, of the tests' origin.
func testLogKey(t testing.TB, n byte, at time.Time) *cardstoragev1.LogKeyRecord {
	t.Helper()
	k, err := newLogKey(bytes.NewReader(bytes.Repeat([]byte{n}, ed25519.SeedSize)), testSigner.Name(), at)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testLogKeyRotation: a rotation adds a key that signs beside the current one, the
// latest checkpoint signed again at once by both; one rotation at a time; retiring a
// key erases its seed and leaves the others to sign, the latest checkpoint at once;
// the only key cannot be retired; refusals write nothing; the keys survive a reopen.
func testLogKeyRotation(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	withKey(t, s)
	if _, err := s.LogKeys(); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("LogKeys of an empty store: %v; want ErrNotFound", err)
	}
	k1, k2, k3 := testLogKey(t, 1, t0), testLogKey(t, 2, t0.Add(time.Hour)), testLogKey(t, 3, t0.Add(2*time.Hour))
	if _, err := s.AddLogKey(k2, signWithLogKeys); !errors.Is(err, errs.ErrNotFound) {
		t.Errorf("AddLogKey without a first key: %v; want ErrNotFound", err)
	}
	if _, err := s.LogKey(k1); err != nil {
		t.Fatal(err)
	}
	vk := func(k *cardstoragev1.LogKeyRecord) string { return logKeyView(k).GetVerifierKey() }
	// signedBy checks that rec opens with each of want alone and with none of refused.
	signedBy := func(rec *cardstoragev1.CheckpointRecord, want, refused []*cardstoragev1.LogKeyRecord) {
		t.Helper()
		for _, k := range want {
			if _, err := kt.OpenCheckpoint(rec.GetSignedNote(), vk(k)); err != nil {
				t.Errorf("checkpoint of %d entries with key %s: %v", rec.GetSize(), k.GetKeyId(), err)
			}
		}
		for _, k := range refused {
			if _, err := kt.OpenCheckpoint(rec.GetSignedNote(), vk(k)); !errors.Is(err, kt.ErrUnknownLogKey) {
				t.Errorf("checkpoint of %d entries with key %s: %v; want ErrUnknownLogKey", rec.GetSize(), k.GetKeyId(), err)
			}
		}
	}
	// A rotation before the first checkpoint changes the key set only.
	if cp, err := s.AddLogKey(k2, signWithLogKeys); err != nil || cp != nil {
		t.Fatalf("AddLogKey before the first checkpoint: %v, %v; want no checkpoint", cp, err)
	}
	if _, _, err := s.RetireLogKey(k2.GetKeyId(), t0, signWithLogKeys); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RetireLogKey(k1.GetKeyId(), t0, signWithLogKeys); !errors.Is(err, errs.ErrPrecondition) {
		t.Fatalf("retiring the only key that signs: %v; want ErrPrecondition", err)
	}
	empty, _, err := s.AppendLog(10, t0, signWithLogKeys)
	if err != nil {
		t.Fatal(err)
	}
	signedBy(empty, []*cardstoragev1.LogKeyRecord{k1}, []*cardstoragev1.LogKeyRecord{k2, k3})

	// Refused rotations write nothing.
	other := testLogKey(t, 4, t0)
	other.Origin = "another.test/kt"
	before := e.snapshot(t, s)
	for _, tc := range []struct {
		name string
		next *cardstoragev1.LogKeyRecord
		want error
	}{
		{"another origin", other, errs.ErrInvalid},
		{"a key it had", k2, errs.ErrExists},
		{"a key without its seed", &cardstoragev1.LogKeyRecord{KeyId: "noseed", Origin: testSigner.Name(), PublicKey: k3.GetPublicKey()}, errs.ErrInvalid},
	} {
		if _, err := s.AddLogKey(tc.next, signWithLogKeys); !errors.Is(err, tc.want) {
			t.Errorf("AddLogKey of %s: %v; want %v", tc.name, err, tc.want)
		}
	}
	if !maps.Equal(before, e.snapshot(t, s)) {
		t.Error("a refused AddLogKey wrote")
	}

	// The rotation: the latest checkpoint is signed again by both, same body.
	resigned, err := s.AddLogKey(k3, signWithLogKeys)
	if err != nil {
		t.Fatal(err)
	}
	if resigned.GetSize() != empty.GetSize() || !bytes.Equal(resigned.GetLogRoot(), empty.GetLogRoot()) || !bytes.Equal(resigned.GetMapRoot(), empty.GetMapRoot()) {
		t.Errorf("the checkpoint signed again is %v; want the body of %v", resigned, empty)
	}
	signedBy(resigned, []*cardstoragev1.LogKeyRecord{k1, k3}, []*cardstoragev1.LogKeyRecord{k2})
	if got, err := s.LatestCheckpoint(); err != nil || !proto.Equal(got, resigned) {
		t.Errorf("LatestCheckpoint after the rotation = %v, %v; want the one signed again", got, err)
	}
	before = e.snapshot(t, s)
	if _, err := s.AddLogKey(testLogKey(t, 5, t0), signWithLogKeys); !errors.Is(err, errs.ErrPrecondition) {
		t.Errorf("a second rotation during one: %v; want ErrPrecondition", err)
	}
	if !maps.Equal(before, e.snapshot(t, s)) {
		t.Error("a refused second rotation wrote")
	}
	// New checkpoints during the overlap are signed by both.
	mustPublish(t, s, record("app_a", idAlice, 1, nil), nil)
	during, n, err := s.AppendLog(10, t0, signWithLogKeys)
	if err != nil || n != 1 {
		t.Fatalf("append during the rotation: %d, %v", n, err)
	}
	signedBy(during, []*cardstoragev1.LogKeyRecord{k1, k3}, nil)

	// Refused retirements write nothing.
	before = e.snapshot(t, s)
	for _, tc := range []struct {
		name, id string
		want     error
	}{
		{"a key the log never had", "nosuchkey", errs.ErrNotFound},
		{"a retired key", k2.GetKeyId(), errs.ErrPrecondition},
	} {
		if _, _, err := s.RetireLogKey(tc.id, t0, signWithLogKeys); !errors.Is(err, tc.want) {
			t.Errorf("RetireLogKey of %s: %v; want %v", tc.name, err, tc.want)
		}
	}
	if !maps.Equal(before, e.snapshot(t, s)) {
		t.Error("a refused RetireLogKey wrote")
	}

	// The end of the rotation: the first key retires, its seed erased.
	at := t0.Add(3 * time.Hour)
	retired, after, err := s.RetireLogKey(k1.GetKeyId(), at, signWithLogKeys)
	if err != nil {
		t.Fatal(err)
	}
	if len(retired.GetSeed()) != 0 || !retired.GetRetiredAt().AsTime().Equal(at) || !bytes.Equal(retired.GetPublicKey(), k1.GetPublicKey()) {
		t.Errorf("retired key %v; want k1's public key, no seed, retired at %s", retired, at)
	}
	if after.GetSize() != during.GetSize() {
		t.Errorf("the checkpoint signed again has %d entries; want %d", after.GetSize(), during.GetSize())
	}
	signedBy(after, []*cardstoragev1.LogKeyRecord{k3}, []*cardstoragev1.LogKeyRecord{k1})
	s = reopen(t)
	keys, err := s.LogKeys()
	if err != nil || len(keys) != 3 {
		t.Fatalf("LogKeys after a reopen: %d keys, %v; want 3", len(keys), err)
	}
	for i, want := range []*cardstoragev1.LogKeyRecord{retired, k2, k3} {
		isRetired := i < 2
		if keys[i].GetKeyId() != want.GetKeyId() || (keys[i].GetRetiredAt() != nil) != isRetired || (len(keys[i].GetSeed()) == 0) != isRetired {
			t.Errorf("key %d after a reopen: %v; want %s, retired without seed: %v", i, keys[i], want.GetKeyId(), isRetired)
		}
	}
	if first, err := s.LogKey(nil); err != nil || first.GetKeyId() != k1.GetKeyId() || len(first.GetSeed()) != 0 {
		t.Errorf("LogKey after retiring the first key: %v, %v; want it, without its seed", first, err)
	}
	if _, _, err := s.RetireLogKey(k3.GetKeyId(), at, signWithLogKeys); !errors.Is(err, errs.ErrPrecondition) {
		t.Errorf("retiring the only key left: %v; want ErrPrecondition", err)
	}
	mustPublish(t, s, record("app_a", idBob, 2, nil), nil)
	later, _, err := s.AppendLog(10, at, signWithLogKeys)
	if err != nil {
		t.Fatal(err)
	}
	signedBy(later, []*cardstoragev1.LogKeyRecord{k3}, []*cardstoragev1.LogKeyRecord{k1, k2})
}

// testLogKeyRotationDuringAppends: one replica rotates the log key (a new key, then
// the first retired) while another publishes and appends. Every checkpoint is signed
// by a key of the log, and none that an append returns after the retirement returned
// carries the retired key's signature: the appender of another replica never signs
// with a key set that a rotation changed.
func testLogKeyRotationDuringAppends(t *testing.T, e storeEngine) {
	stores := e.Replicas(t, 2)
	withKey(t, stores[0])
	k1, k2 := testLogKey(t, 1, t0), testLogKey(t, 2, t0.Add(time.Hour))
	if _, err := stores[0].LogKey(k1); err != nil {
		t.Fatal(err)
	}
	vk := func(k *cardstoragev1.LogKeyRecord) string { return logKeyView(k).GetVerifierKey() }
	var retired atomic.Bool
	done := make(chan struct{})
	var appenders sync.WaitGroup
	appenders.Go(func() {
		s := stores[1]
		var prev []byte
		for i := 0; ; i++ {
			c := record("app_a", idAlice, byte(i+1), prev)
			if _, _, err := s.Publish(c, nil, allow(&seen{})); err != nil {
				t.Error(err)
				return
			}
			prev = c.GetCardId()
			after := retired.Load()
			rec, _, err := s.AppendLog(10, t0, signWithLogKeys)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := kt.OpenCheckpoint(rec.GetSignedNote(), vk(k1), vk(k2)); err != nil {
				t.Errorf("checkpoint of %d entries: %v", rec.GetSize(), err)
			}
			if _, err := kt.OpenCheckpoint(rec.GetSignedNote(), vk(k1)); after && err == nil {
				t.Errorf("checkpoint of %d entries, appended after the retirement, is signed by the retired key", rec.GetSize())
			}
			select {
			case <-done:
				return
			default:
			}
			if i >= 200 {
				return
			}
		}
	})
	time.Sleep(20 * time.Millisecond)
	if _, err := stores[0].AddLogKey(k2, signWithLogKeys); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if _, _, err := stores[0].RetireLogKey(k1.GetKeyId(), t0, signWithLogKeys); err != nil {
		t.Fatal(err)
	}
	retired.Store(true)
	time.Sleep(20 * time.Millisecond)
	close(done)
	appenders.Wait()
	latest, err := stores[1].LatestCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kt.OpenCheckpoint(latest.GetSignedNote(), vk(k1)); !errors.Is(err, kt.ErrUnknownLogKey) {
		t.Errorf("the latest checkpoint with the retired key: %v; want ErrUnknownLogKey", err)
	}
}
