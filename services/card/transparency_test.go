package card

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// publishCheckpoint appends every event so far and returns the verified checkpoint.
func (e *env) publishCheckpoint(t testing.TB) *kt.Checkpoint {
	t.Helper()
	if _, err := e.srv.PublishCheckpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e.checkpoint(t)
}

// checkpoint fetches the latest checkpoint over gRPC and verifies it with the log key
// GetLogKey names.
func (e *env) checkpoint(t testing.TB) *kt.Checkpoint {
	t.Helper()
	resp, err := e.client.GetCheckpoint(context.Background(), &cardv1.GetCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := kt.OpenCheckpoint(resp.GetCheckpoint(), e.logKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if cp.Size != resp.GetSize() {
		t.Fatalf("checkpoint of size %d, answer says %d", cp.Size, resp.GetSize())
	}
	return cp
}

func (e *env) logKey(t testing.TB) string {
	t.Helper()
	resp, err := e.client.GetLogKey(context.Background(), &cardv1.GetLogKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetVerifierKey()
}

// replay fetches every log entry of cp over gRPC and recomputes the log and the map
// from them alone, as an auditor does; it fails unless they give cp's roots.
func (e *env) replay(t testing.TB, cp *kt.Checkpoint) [][]byte {
	t.Helper()
	m := kt.NewMemory()
	var got *kt.Checkpoint
	for start := uint64(0); start < cp.Size; {
		resp, err := e.client.GetLogEntries(context.Background(), &cardv1.GetLogEntriesRequest{Start: start, Count: 7})
		if err != nil {
			t.Fatal(err)
		}
		if got, err = m.Append(cp.Origin, resp.GetEntries()...); err != nil {
			t.Fatal(err)
		}
		start += uint64(len(resp.GetEntries()))
	}
	if got == nil {
		got, _ = m.Append(cp.Origin)
	}
	if *got != *cp {
		t.Fatalf("replaying the log's %d entries gives log root %x and map root %x; the checkpoint says %x and %x", cp.Size, got.LogRoot, got.MapRoot, cp.LogRoot, cp.MapRoot)
	}
	return m.Leaves
}

// TestLogFollowsEveryCardEvent: publications, endorsed rotations, resets and
// revocations, some while the log is being appended, all reach the log once and in
// order, entry i being event i+1; every checkpoint extends the one before; and the map
// that each checkpoint commits to is the one an auditor recomputes from the entries.
func TestLogFollowsEveryCardEvent(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.newApp(t, "A")
	users := e.newUsers(t, a, "alice", "bob", "carol", "dave")
	var checkpoints []*kt.Checkpoint
	checkpoints = append(checkpoints, e.publishCheckpoint(t))
	if checkpoints[0].Size != 0 || checkpoints[0].LogRoot != kt.EmptyLogRoot || checkpoints[0].MapRoot != kt.EmptyMapHash {
		t.Fatalf("first checkpoint %+v, want the empty log and map", checkpoints[0])
	}
	keys := map[string]*e2ee.KeyPair{}
	cards := map[string][]byte{}
	revoked := map[string]bool{}
	step := func(u user) {
		k := newKeys(t, e2ee.SuiteX25519)
		switch prev := cards[u.identity]; {
		case prev == nil:
			cards[u.identity] = e.publish(t, u, k, nil, nil).GetCardId()
		case u.identity == users[2].identity || revoked[u.identity]:
			// carol resets; bob publishes again after his revocation, by a reset.
			revoked[u.identity] = false
			resp, err := e.client.PublishCard(u.ctx(), e.resetRequest(t, u, k, e.grant(t, u, 0)))
			if err != nil {
				t.Fatal(err)
			}
			cards[u.identity] = resp.GetCard().GetCardId()
		default:
			cards[u.identity] = e.publish(t, u, k, prev, keys[u.identity]).GetCardId()
		}
		keys[u.identity] = k
		e.clock.Add(time.Second)
	}
	for round := range 3 {
		// Publications while the log appends, from several goroutines.
		var wg sync.WaitGroup
		for _, u := range users[:3] {
			step(u)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.srv.PublishCheckpoint(context.Background()); err != nil {
				t.Error(err)
			}
		}()
		if round == 1 {
			if _, err := e.client.RevokeCard(users[1].ctx(), &cardv1.RevokeCardRequest{CardId: cards[users[1].identity]}); err != nil {
				t.Fatal(err)
			}
			revoked[users[1].identity] = true
		}
		wg.Wait()
		checkpoints = append(checkpoints, e.publishCheckpoint(t))
	}
	last := checkpoints[len(checkpoints)-1]
	evs, latest, err := e.store.Events(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if last.Size != latest || uint64(len(evs)) != latest {
		t.Fatalf("log of %d entries, feed of %d events (%d read)", last.Size, latest, len(evs))
	}
	leaves := e.replay(t, last)
	for i, ev := range evs {
		want, err := eventLeaf(ev)
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetSequence() != uint64(i)+1 || !bytes.Equal(leaves[i], want) {
			t.Fatalf("log entry %d is not the entry of event %d", i, ev.GetSequence())
		}
	}
	for i := 1; i < len(checkpoints); i++ {
		older, newer := checkpoints[i-1], checkpoints[i]
		var proof [][]byte
		if older.Size > 0 && older.Size < newer.Size {
			resp, err := e.client.GetConsistencyProof(context.Background(), &cardv1.GetConsistencyProofRequest{FromSize: older.Size, ToSize: newer.Size})
			if err != nil {
				t.Fatal(err)
			}
			proof = resp.GetProof()
		}
		if older.Size > 0 {
			if err := kt.VerifyConsistency(older, newer, proof); err != nil {
				t.Errorf("checkpoint %d to %d: %v", older.Size, newer.Size, err)
			}
		}
	}
	// Nothing new: no new checkpoint, the same one.
	if again := e.publishCheckpoint(t); *again != *last {
		t.Errorf("a checkpoint without new events changed: %+v, was %+v", again, last)
	}
	// Every entry's inclusion proof, from the API.
	for i := range last.Size {
		resp, err := e.client.GetInclusionProof(context.Background(), &cardv1.GetInclusionProofRequest{Index: i})
		if err != nil {
			t.Fatal(err)
		}
		if err := kt.VerifyInclusion(last, i, resp.GetLeaf(), resp.GetProof()); err != nil || resp.GetTreeSize() != last.Size {
			t.Fatalf("entry %d: size %d, %v", i, resp.GetTreeSize(), err)
		}
	}
	// Every card, as GetCard and ListCardHistory serve it, names the entry that
	// published it (log_index), by which a client proves an old card.
	for _, u := range users {
		resp, err := e.client.ListCardHistory(u.ctx(), &cardv1.ListCardHistoryRequest{Identity: u.identity})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.GetCards() {
			got, err := e.client.GetCard(u.ctx(), &cardv1.GetCardRequest{CardId: c.GetCardId()})
			if err != nil {
				t.Fatal(err)
			}
			for _, view := range []*cardv1.Card{c, got.GetCard()} {
				leaf, err := kt.ParseLeaf(leaves[view.GetLogIndex()])
				key := kt.MapKey(a.id, u.identity)
				if err != nil || !bytes.Equal(leaf.GetCardId(), c.GetCardId()) || !bytes.Equal(leaf.GetMapKey(), key[:]) || leaf.GetKind() == ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION {
					t.Fatalf("card %x of %s names log entry %d, which is not its publication (%v, %v)", c.GetCardId()[:4], u.identity, view.GetLogIndex(), leaf, err)
				}
			}
		}
	}
}

// TestSearchCardsWithProofs: every identity asked gets a proof that pkg/kt verifies
// against the signed checkpoint, with the card the map names: the current card after a
// rotation, none after a revocation, absence for an identity that never published; a
// card published after the checkpoint shows from the next one.
func TestSearchCardsWithProofs(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.newApp(t, "A")
	users := e.newUsers(t, a, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := users[0], users[1], users[2], users[3]
	k1, k2 := newKeys(t, e2ee.SuiteX25519), newKeys(t, e2ee.SuiteHybrid)
	c1 := e.publish(t, alice, k1, nil, nil)
	e.clock.Add(time.Second)
	c2 := e.publish(t, alice, k2, c1.GetCardId(), k1)
	b1 := e.publish(t, bob, newKeys(t, e2ee.SuiteX25519), nil, nil)
	if _, err := e.client.RevokeCard(bob.ctx(), &cardv1.RevokeCardRequest{CardId: b1.GetCardId()}); err != nil {
		t.Fatal(err)
	}
	e.publishCheckpoint(t)
	// Published after the checkpoint: not in it yet.
	d1 := e.publish(t, dave, newKeys(t, e2ee.SuiteX25519), nil, nil)
	vkey := e.logKey(t)

	lookup := func(ids ...string) (*kt.Checkpoint, []*kt.Lookup, []*cardv1.ProvedCard) {
		t.Helper()
		resp, err := e.client.SearchCardsWithProofs(carol.ctx(), &cardv1.SearchCardsWithProofsRequest{Identities: ids})
		if err != nil {
			t.Fatal(err)
		}
		cp, err := kt.OpenCheckpoint(resp.GetCheckpoint(), vkey)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResults()) != len(ids) {
			t.Fatalf("%d results for %d identities", len(resp.GetResults()), len(ids))
		}
		var out []*kt.Lookup
		for i, r := range resp.GetResults() {
			l, err := kt.VerifyLookup(cp, a.id, ids[i], r.GetProof())
			if err != nil {
				t.Fatalf("%s: %v", ids[i], err)
			}
			if got := r.GetCard().GetCardId(); !bytes.Equal(got, l.CardID()) {
				t.Fatalf("%s: card %x returned, the map names %x", ids[i], got, l.CardID())
			}
			out = append(out, l)
		}
		return cp, out, resp.GetResults()
	}
	_, got, results := lookup(alice.identity, bob.identity, carol.identity, dave.identity)
	if !bytes.Equal(got[0].CardID(), c2.GetCardId()) || got[0].Leaf.GetKind().String() != "LOG_EVENT_KIND_ENDORSED_ROTATION" {
		t.Errorf("alice: card %x by %s, want the rotation to %x", got[0].CardID(), got[0].Leaf.GetKind(), c2.GetCardId())
	}
	if results[0].GetCard().GetStatus() != cardv1.CardStatus_CARD_STATUS_ACTIVE || len(results[0].GetCard().GetContent()) == 0 {
		t.Errorf("alice's card is returned as %v without its content", results[0].GetCard().GetStatus())
	}
	if got[1].Value == nil || got[1].CardID() != nil || got[1].Leaf.GetKind().String() != "LOG_EVENT_KIND_REVOCATION" {
		t.Errorf("bob: %v, want an entry without a card, proved by its revocation", got[1].Value)
	}
	if got[2].Value != nil || got[3].Value != nil {
		t.Errorf("carol and dave: %v and %v, want absent (dave published after the checkpoint)", got[2].Value, got[3].Value)
	}
	e.publishCheckpoint(t)
	cp, got, _ := lookup(dave.identity)
	if !bytes.Equal(got[0].CardID(), d1.GetCardId()) {
		t.Errorf("dave after the next checkpoint: %x, want %x", got[0].CardID(), d1.GetCardId())
	}

	// The same lookup through the REST gateway, its JSON decoded as a client would.
	body := fmt.Sprintf(`{"identities":[%q]}`, alice.identity)
	req, _ := http.NewRequest(http.MethodPost, e.httpURL+"/v1/cards:search-with-proofs", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+carol.token)
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(hr.Body)
	hr.Body.Close()
	if hr.StatusCode != http.StatusOK {
		t.Fatalf("REST: %d %s", hr.StatusCode, raw)
	}
	var rest cardv1.SearchCardsWithProofsResponse
	if err := protojson.Unmarshal(raw, &rest); err != nil {
		t.Fatal(err)
	}
	restCP, err := kt.OpenCheckpoint(rest.GetCheckpoint(), vkey)
	if err != nil || *restCP != *cp {
		t.Fatalf("REST checkpoint %+v, %v", restCP, err)
	}
	if _, err := kt.VerifyLookup(restCP, a.id, alice.identity, rest.GetResults()[0].GetProof()); err != nil {
		t.Fatalf("REST lookup: %v", err)
	}
	// The public log routes need no credential.
	for _, path := range []string{"/v1/kt/log-key", "/v1/kt/checkpoint", "/v1/kt/entries?start=0&count=2", "/v1/kt/inclusion?index=1", "/v1/kt/consistency?from_size=1&to_size=2"} {
		hr, err := http.Get(e.httpURL + path)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(hr.Body)
		hr.Body.Close()
		if hr.StatusCode != http.StatusOK || !json.Valid(raw) {
			t.Errorf("GET %s: %d %s", path, hr.StatusCode, raw)
		}
	}
}

// TestKeyTransparencyBadRequests: out-of-range indexes and sizes, too many entries,
// bad identities and missing credentials are refused with their code and a message,
// and write nothing.
func TestKeyTransparencyBadRequests(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.newApp(t, "A")
	u := e.newUser(t, a, "alice")
	_, err := e.client.GetCheckpoint(context.Background(), &cardv1.GetCheckpointRequest{})
	wantCode(t, err, codes.Unavailable, "no checkpoint yet")
	e.publish(t, u, newKeys(t, e2ee.SuiteX25519), nil, nil)
	e.publish(t, e.newUser(t, a, "bob"), newKeys(t, e2ee.SuiteX25519), nil, nil)
	e.publishCheckpoint(t) // 2 entries
	ctx := context.Background()
	tooMany := make([]string, MaxSearchIdentities+1)
	for i := range tooMany {
		tooMany[i] = "u_" + b32.EncodeToString(binary.BigEndian.AppendUint64(make([]byte, 12), uint64(i)))
	}
	servicetest.CheckRefusals(t, []servicetest.Refusal{
		{"consistency from 0", servicetest.Call(e.client.GetConsistencyProof, ctx, &cardv1.GetConsistencyProofRequest{FromSize: 0, ToSize: 2}), codes.InvalidArgument, "from_size is 0"},
		{"consistency from above to", servicetest.Call(e.client.GetConsistencyProof, ctx, &cardv1.GetConsistencyProofRequest{FromSize: 2, ToSize: 1}), codes.InvalidArgument, "from_size 2 is larger than to_size 1"},
		{"consistency to past the log", servicetest.Call(e.client.GetConsistencyProof, ctx, &cardv1.GetConsistencyProofRequest{FromSize: 1, ToSize: 3}), codes.OutOfRange, "tree size 3 is larger than the log, which has 2 entries"},
		{"inclusion of an index past the log", servicetest.Call(e.client.GetInclusionProof, ctx, &cardv1.GetInclusionProofRequest{Index: 2}), codes.OutOfRange, "index 2 is not in a log of 2 entries"},
		{"inclusion in a tree larger than the log", servicetest.Call(e.client.GetInclusionProof, ctx, &cardv1.GetInclusionProofRequest{Index: 0, TreeSize: 5}), codes.OutOfRange, "tree size 5 is larger than the log"},
		{"inclusion of an index past the tree size", servicetest.Call(e.client.GetInclusionProof, ctx, &cardv1.GetInclusionProofRequest{Index: 1, TreeSize: 1}), codes.OutOfRange, "index 1 is not in a log of 1 entries"},
		{"entries from past the log", servicetest.Call(e.client.GetLogEntries, ctx, &cardv1.GetLogEntriesRequest{Start: 2}), codes.OutOfRange, "start 2 is past the log, which has 2 entries"},
		{"too many entries", servicetest.Call(e.client.GetLogEntries, ctx, &cardv1.GetLogEntriesRequest{Count: MaxLogEntries + 1}), codes.InvalidArgument, "count 1001 is more than 1000 entries"},
		{"lookup without a token", servicetest.Call(e.client.SearchCardsWithProofs, ctx, &cardv1.SearchCardsWithProofsRequest{Identities: []string{u.identity}}), codes.Unauthenticated, "missing credential"},
		{"lookup of no identity", servicetest.Call(e.client.SearchCardsWithProofs, u.ctx(), &cardv1.SearchCardsWithProofsRequest{}), codes.InvalidArgument, "identities is empty"},
		{"lookup of a malformed identity", servicetest.Call(e.client.SearchCardsWithProofs, u.ctx(), &cardv1.SearchCardsWithProofsRequest{Identities: []string{u.identity, "bob"}}), codes.InvalidArgument, "identities[1]"},
		{"lookup of too many identities", servicetest.Call(e.client.SearchCardsWithProofs, u.ctx(), &cardv1.SearchCardsWithProofsRequest{Identities: tooMany}), codes.InvalidArgument, "more than 1000 distinct identities"},
	}, e.snapshot)
	// A short page at the end of the log, not an error.
	entries, err := e.client.GetLogEntries(ctx, &cardv1.GetLogEntriesRequest{Start: 1, Count: 10})
	if err != nil || len(entries.GetEntries()) != 1 {
		t.Errorf("entries from 1 of 2: %d, %v", len(entries.GetEntries()), err)
	}
}

// TestLogMigratesEarlierCardsAndSurvivesRestarts: cards published before the log
// existed (events in the feed, no log) are appended on the first start, in order; a
// restart keeps the log key, its origin and the log; appending again adds nothing; a
// configured origin that is not the log's is refused.
func TestLogMigratesEarlierCardsAndSurvivesRestarts(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, envOptions{dir: dir})
	a := e.newApp(t, "A")
	users := e.newUsers(t, a, "alice", "bob", "carol")
	for _, u := range users {
		e.publish(t, u, newKeys(t, e2ee.SuiteX25519), nil, nil)
	}
	// Until now no checkpoint: as on a card store from before key transparency, the
	// feed holds events the log does not.
	if _, err := e.store.LatestCheckpoint(); err == nil {
		t.Fatal("a checkpoint exists before the first append")
	}
	vkey := e.logKey(t)
	first := e.publishCheckpoint(t)
	if first.Size != 3 {
		t.Fatalf("the first checkpoint has %d entries, want the 3 earlier events", first.Size)
	}
	e.replay(t, first)
	clk := e.clock
	e.stop()

	e = newEnv(t, envOptions{dir: dir, clock: clk})
	if got := e.logKey(t); got != vkey {
		t.Fatalf("log key after a restart %s, was %s", got, vkey)
	}
	if again := e.publishCheckpoint(t); *again != *first {
		t.Fatalf("after a restart, appending again gives %+v, was %+v", again, first)
	}
	e.stop()

	store, err := OpenBoltStore(dir + "/card.db")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	_, err = New(store, Config{LogOrigin: "kt.example.com"}, nil)
	if err == nil || !strings.Contains(err.Error(), "cannot become \"kt.example.com\"") {
		t.Fatalf("another origin for an existing log: %v", err)
	}
}

// TestCheckpointsArePublishedInTheBackground: Run appends and signs on its interval.
func TestCheckpointsArePublishedInTheBackground(t *testing.T) {
	e := newEnv(t, envOptions{cfg: Config{CheckpointInterval: 10 * time.Millisecond}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.srv.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	a := e.newApp(t, "A")
	e.publish(t, e.newUser(t, a, "alice"), newKeys(t, e2ee.SuiteX25519), nil, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := e.client.GetCheckpoint(ctx, &cardv1.GetCheckpointRequest{})
		if err == nil && resp.GetSize() == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of the publication within 10 s: %v, %v", resp, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLogKeyIsNotTheServiceKey: checkpoints are signed by a key of their own.
func TestLogKeyIsNotTheServiceKey(t *testing.T) {
	e := newEnv(t, envOptions{})
	lk, err := e.client.GetLogKey(context.Background(), &cardv1.GetLogKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sk, err := e.client.GetServiceKey(context.Background(), &cardv1.GetServiceKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(lk.GetPublicKey(), sk.GetKey().GetPublicKey()) || !strings.HasPrefix(lk.GetOrigin(), "umbra/kt/") || !strings.HasPrefix(lk.GetVerifierKey(), lk.GetOrigin()+"+") {
		t.Errorf("log key %q (%x), service key %x", lk.GetVerifierKey(), lk.GetPublicKey(), sk.GetKey().GetPublicKey())
	}
	e.publishCheckpoint(t)
	resp, _ := e.client.GetCheckpoint(context.Background(), &cardv1.GetCheckpointRequest{})
	serviceAsLogKey, _ := kt.NewLogSigner(lk.GetOrigin(), make([]byte, 32))
	if _, err := kt.OpenCheckpoint(resp.GetCheckpoint(), serviceAsLogKey.VerifierKey()); err == nil {
		t.Error("the checkpoint verifies with a key that is not the log key")
	}
}

// TestLogRefusesAGapInTheFeed: were an event missing from the feed (a damaged file),
// the log stops there rather than skip it, and writes nothing; and appending in small
// batches appends every event, once, in order.
func TestLogRefusesAGapInTheFeed(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.newApp(t, "A")
	for _, u := range e.newUsers(t, a, "alice", "bob", "carol", "dave", "erin") {
		e.publish(t, u, newKeys(t, e2ee.SuiteX25519), nil, nil)
	}
	for want := uint64(2); want <= 4; want += 2 {
		cp, n, err := e.store.AppendLog(2, e.clock.Now(), signWithLogKeys)
		if err != nil || n != 2 || cp.GetSize() != want {
			t.Fatalf("append of 2: %d appended, size %d, %v; want size %d", n, cp.GetSize(), err, want)
		}
	}
	// Event 5 goes missing; event 6 is published after it.
	e.publish(t, e.newUser(t, a, "frank"), newKeys(t, e2ee.SuiteX25519), nil, nil)
	if err := e.store.DB().Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketEvents).Delete(boltdb.U64(5)) }); err != nil {
		t.Fatal(err)
	}
	before := e.snapshot(t)
	_, _, err := e.store.AppendLog(10, e.clock.Now(), signWithLogKeys)
	if err == nil || !strings.Contains(err.Error(), "the card event feed has event 6 where 5 should be") {
		t.Fatalf("append over a gap: %v", err)
	}
	if !maps.Equal(before, e.snapshot(t)) {
		t.Error("the refused append changed card.db")
	}
	cp := e.checkpoint(t)
	if leaves := e.replay(t, cp); len(leaves) != 4 {
		t.Fatalf("the log has %d entries, want the 4 before the gap", len(leaves))
	}
}

// TestVerifyFindsALogShorterThanItsCheckpoint: `umbra admin verify` reports a log that
// lost an entry its checkpoint counts.
func TestVerifyFindsALogShorterThanItsCheckpoint(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.newApp(t, "A")
	e.publish(t, e.newUser(t, a, "alice"), newKeys(t, e2ee.SuiteX25519), nil, nil)
	e.publishCheckpoint(t)
	e.stop()
	path := filepath.Join(e.dir, "card.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketKTLeaves).Delete(boltdb.U64(0)) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	r, err := Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(r.Problems, "\n"), "kt_leaves: 0 log entries, but the latest checkpoint counts 1") {
		t.Fatalf("problems: %q", r.Problems)
	}
}
