package sdk_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/keystore"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// Key transparency against a malicious server: the operator holds card.db, the log
// key with it, so it can sign checkpoints of any log and map it computes. These tests
// play it with pkg/kt's own builders (a log and map in memory, signed with the real
// log key read from card.db) behind the tampering interceptor of malicious_test.go.
// The client must refuse what the log does not prove, and a checkpoint that is not
// consistent with the one it kept; what a client cannot see (a map that hides a
// newer card) the owner's own device must, by monitoring.

// operatorLog is the malicious operator's view of the key transparency log.
type operatorLog struct {
	t      *testing.T
	n      *nodetest.Node
	app    string
	signer *kt.LogSigner
}

func newOperatorLog(t *testing.T, n *nodetest.Node, app string) *operatorLog {
	t.Helper()
	// The log's first key, or after a log key rotation the key it added.
	var rec cardstoragev1.LogKeyRecord
	err := n.Stores["card"].View(func(tx *bolt.Tx) error {
		if err := boltdb.GetProto(tx.Bucket([]byte("kt_log_key")), []byte("current"), &rec); err != nil {
			return err
		}
		b := tx.Bucket([]byte("kt_log_keys"))
		return b.ForEach(func(k, v []byte) error {
			var added cardstoragev1.LogKeyRecord
			if err := boltdb.DecodeProto(b, k, v, &added); err != nil {
				return err
			}
			if len(added.GetSeed()) > 0 && added.GetRetiredAt() == nil {
				proto.Reset(&rec)
				proto.Merge(&rec, &added)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := kt.NewLogSigner(rec.GetOrigin(), rec.GetSeed())
	if err != nil {
		t.Fatal(err)
	}
	return &operatorLog{t: t, n: n, app: app, signer: signer}
}

// leaves returns every entry of the real log at its latest checkpoint.
func (o *operatorLog) leaves() [][]byte {
	o.t.Helper()
	ctx := context.Background()
	cards := cardv1.NewCardServiceClient(o.n.Conn())
	cp, err := cards.GetCheckpoint(ctx, &cardv1.GetCheckpointRequest{})
	if err != nil {
		o.t.Fatal(err)
	}
	var out [][]byte
	for uint64(len(out)) < cp.GetSize() {
		resp, err := cards.GetLogEntries(ctx, &cardv1.GetLogEntriesRequest{Start: uint64(len(out)), Count: 1000})
		if err != nil {
			o.t.Fatal(err)
		}
		out = append(out, resp.GetEntries()...)
	}
	return out[:cp.GetSize()]
}

// leaf is a log entry the operator writes.
func (o *operatorLog) leaf(identity string, kind ktv1.LogEventKind, cardID []byte) []byte {
	o.t.Helper()
	key := kt.MapKey(o.app, identity)
	b, err := kt.EncodeLeaf(&ktv1.LogLeaf{Version: kt.Version, MapKey: key[:], Kind: kind, CardId: cardID, OccurredAtUnixNanos: time.Now().UnixNano()})
	if err != nil {
		o.t.Fatal(err)
	}
	return b
}

// forgedView is a log of the operator's making, and a map that applies every entry
// but the hidden ones, in one checkpoint signed with the real log key.
type forgedView struct {
	op     *operatorLog
	leaves [][]byte
	log    kt.MemoryLogStore
	mapSt  kt.MemoryMapStore
	values map[[kt.HashSize]byte]*ktv1.MapValue
	cp     *kt.Checkpoint
	signed []byte

	mu    sync.Mutex
	cards map[string]*cardv1.Card // served with lookups, by card id
	// edit, if set, changes each identity's answer after it is made.
	edit func(identity string, r *cardv1.ProvedCard)
}

// forge signs a view of leaves whose map skips the entries hide says.
func (o *operatorLog) forge(leaves [][]byte, hide func(i int) bool) *forgedView {
	o.t.Helper()
	v := &forgedView{op: o, leaves: leaves, log: kt.MemoryLogStore{}, mapSt: kt.MemoryMapStore{}, values: map[[kt.HashSize]byte]*ktv1.MapValue{}, cards: map[string]*cardv1.Card{}}
	logRoot, err := kt.AppendLog(v.log, 0, leaves)
	if err != nil {
		o.t.Fatal(err)
	}
	for i, b := range leaves {
		if hide != nil && hide(i) {
			continue
		}
		leaf, err := kt.ParseLeaf(b)
		if err != nil {
			o.t.Fatal(err)
		}
		key := [kt.HashSize]byte(leaf.GetMapKey())
		v.values[key] = kt.NextMapValue(v.values[key], leaf, uint64(i))
	}
	var entries []kt.MapEntry
	for key, value := range v.values {
		b, err := kt.EncodeMapValue(value)
		if err != nil {
			o.t.Fatal(err)
		}
		entries = append(entries, kt.MapEntry{Key: key, ValueHash: kt.ValueHash(b)})
	}
	mapRoot, err := kt.UpdateMap(v.mapSt, entries)
	if err != nil {
		o.t.Fatal(err)
	}
	v.cp = &kt.Checkpoint{Origin: o.signer.Name(), Size: uint64(len(leaves)), LogRoot: [kt.HashSize]byte(logRoot), MapRoot: mapRoot}
	if v.signed, err = kt.SignCheckpoint(v.cp, o.signer); err != nil {
		o.t.Fatal(err)
	}
	return v
}

// prove is the lookup proof of identity in the view.
func (v *forgedView) prove(identity string) *ktv1.LookupProof {
	v.op.t.Helper()
	key := kt.MapKey(v.op.app, identity)
	mp, _, ok, err := kt.ProveMap(v.mapSt, key)
	if err != nil {
		v.op.t.Fatal(err)
	}
	p := &ktv1.LookupProof{Identity: identity, MapProof: mp}
	if !ok {
		return p
	}
	value := v.values[key]
	if p.MapValue, err = kt.EncodeMapValue(value); err != nil {
		v.op.t.Fatal(err)
	}
	p.LeafIndex = value.GetCardLogIndex()
	if len(value.GetCardId()) == 0 {
		p.LeafIndex = value.GetLatestLogIndex()
	}
	p.Leaf, p.InclusionHashes = v.entry(p.LeafIndex)
	return p
}

// entry is the leaf at index i of the view's log and its inclusion proof in the
// checkpoint, packed.
func (v *forgedView) entry(i uint64) (leaf, inclusion []byte) {
	v.op.t.Helper()
	hashes, err := kt.InclusionProof(v.log, i, v.cp.Size)
	if err != nil {
		v.op.t.Fatal(err)
	}
	return v.leaves[i], kt.PackHashes(hashes)
}

// answerWith makes the answer r name c, logged at c.LogIndex: a copy of the card, and
// the entry of the view's log that is its leaf, with the leaf's inclusion proof.
func (v *forgedView) answerWith(r *cardv1.ProvedCard, c *cardv1.Card) {
	r.Card, r.Proof.LeafIndex = proto.Clone(c).(*cardv1.Card), c.LogIndex
	r.Proof.Leaf, r.Proof.InclusionHashes = v.entry(c.LogIndex)
}

// card makes the view serve card (with its lookups, and by id).
func (v *forgedView) card(c *cardv1.Card) *forgedView {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.cards[string(c.GetCardId())] = c
	return v
}

// serve answers the log's calls from the view; other calls pass.
func (v *forgedView) serve(method string, req, reply any, err error) error {
	switch r := reply.(type) {
	case *cardv1.SearchCardsWithProofsResponse:
		v.mu.Lock()
		for _, res := range r.GetResults() { // the real cards, to serve where the view names them
			if c := res.GetCard(); c != nil && v.cards[string(c.GetCardId())] == nil {
				v.cards[string(c.GetCardId())] = c
			}
		}
		v.mu.Unlock()
		r.Checkpoint, r.Results = v.signed, nil
		for _, id := range req.(*cardv1.SearchCardsWithProofsRequest).GetIdentities() {
			res := &cardv1.ProvedCard{Proof: v.prove(id)}
			if value, _ := kt.ParseMapValue(res.Proof.GetMapValue()); len(value.GetCardId()) > 0 {
				v.mu.Lock()
				if c := v.cards[string(value.GetCardId())]; c != nil {
					res.Card = proto.Clone(c).(*cardv1.Card)
				}
				v.mu.Unlock()
			}
			if v.edit != nil {
				v.edit(id, res)
			}
			r.Results = append(r.Results, res)
		}
		return nil
	case *cardv1.GetCheckpointResponse:
		r.Checkpoint, r.Size = v.signed, v.cp.Size
		return nil
	case *cardv1.GetConsistencyProofResponse:
		q := req.(*cardv1.GetConsistencyProofRequest)
		if q.GetToSize() > v.cp.Size {
			return status.Errorf(codes.OutOfRange, "to_size %d past the log of %d entries", q.GetToSize(), v.cp.Size)
		}
		proof, perr := kt.ConsistencyProof(v.log, q.GetFromSize(), q.GetToSize())
		if perr != nil {
			return status.Error(codes.Internal, perr.Error())
		}
		r.Proof = proof
		return nil
	case *cardv1.GetInclusionProofResponse:
		q := req.(*cardv1.GetInclusionProofRequest)
		size := q.GetTreeSize()
		if size == 0 {
			size = v.cp.Size
		}
		if q.GetIndex() >= size || size > v.cp.Size {
			return status.Errorf(codes.OutOfRange, "index %d, size %d", q.GetIndex(), size)
		}
		proof, perr := kt.InclusionProof(v.log, q.GetIndex(), size)
		if perr != nil {
			return status.Error(codes.Internal, perr.Error())
		}
		r.Leaf, r.Proof, r.TreeSize = v.leaves[q.GetIndex()], proof, size
		return nil
	case *cardv1.GetCardResponse:
		v.mu.Lock()
		defer v.mu.Unlock()
		if c := v.cards[string(req.(*cardv1.GetCardRequest).GetCardId())]; c != nil {
			r.Card = proto.Clone(c).(*cardv1.Card)
			return nil
		}
	}
	return err
}

// storedCard is the card id as the card service serves it.
func storedCard(t *testing.T, d *ktDevice, id []byte) *cardv1.Card {
	t.Helper()
	resp, err := cardv1.NewCardServiceClient(d.Conn()).GetCard(context.Background(), &cardv1.GetCardRequest{CardId: id})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetCard()
}

// badSignature returns the signed checkpoint with one bit of its signature flipped.
func badSignature(t *testing.T, signed []byte) []byte {
	t.Helper()
	body, sigs, _ := bytes.Cut(signed, []byte("\n\n"))
	line := bytes.TrimSuffix(sigs, []byte("\n"))
	i := bytes.LastIndexByte(line, ' ')
	sig, err := base64.StdEncoding.DecodeString(string(line[i+1:]))
	if err != nil {
		t.Fatal(err)
	}
	sig[10] ^= 1
	out := append(append(append([]byte(nil), body...), "\n\n"...), line[:i+1]...)
	return append(append(out, base64.StdEncoding.EncodeToString(sig)...), '\n')
}

// ktDevice is a device with its own keystore folder and configuration, dialling
// through tp.
type ktDevice struct {
	*device
	alerts chan error
}

func newKTDevice(t *testing.T, n *nodetest.Node, app *nodetest.App, uid, dir string, tp *tamperer, edit func(*sdk.Config)) *ktDevice {
	t.Helper()
	id := app.User(t, uid)
	if dir == "" {
		dir = t.TempDir()
	}
	alerts := make(chan error, 16)
	cfg := sdk.Config{
		Addr: n.GRPC, Token: app.TokenFunc(id), KeystorePath: filepath.Join(dir, "keystore"), NoPassphrase: true, Suite: e2ee.SuiteX25519,
		OnKeyTransparencyAlert: func(err error) {
			select {
			case alerts <- err:
			default:
			}
		},
	}
	if tp != nil {
		cfg.DialOptions = []grpc.DialOption{tp.option()}
	}
	if edit != nil {
		edit(&cfg)
	}
	c, err := sdk.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &ktDevice{device: &device{Client: c, identity: id, keystore: cfg.KeystorePath}, alerts: alerts}
}

// copyDevice copies d's keystore, pins and key transparency state to a new folder:
// the same user's device, as it is now, for one attack.
func copyDevice(t *testing.T, d *ktDevice) string {
	t.Helper()
	dir := t.TempDir()
	for _, suffix := range []string{"", ".trust", ".kt"} {
		src, err := os.Open(d.keystore + suffix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.OpenFile(filepath.Join(dir, "keystore"+suffix), os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		dst.Close()
	}
	return dir
}

// TestKeyTransparencyRefusesWhatTheLogDoesNotProve: each attack on a lookup, against
// a client (a new one for each) that has not pinned bob: a card with no proof, with a
// proof that does not verify, a card that is not the one the map names, another
// identity's proof, a card in the log but not in the map served with its log entry, a
// map entry naming a card the map does not hold, a checkpoint whose signature does not
// verify or that another log key signed. Each is a typed error, and nothing is
// encrypted.
func TestKeyTransparencyRefusesWhatTheLogDoesNotProve(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	bob, bobCard := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	carol, _ := registeredDevice(t, n, app, "carol", e2ee.SuiteX25519)
	both, err := bob.LookupCards(ctx, bob.identity, carol.identity) // both in the log
	if err != nil {
		t.Fatal(err)
	}
	carolProof := both[carol.identity].Proof
	op := newOperatorLog(t, n, app.ID)
	key, kid := operatorKey(t, n)
	forged, _, forgedParsed := forgedCard(t, bob.identity, nil, nil, key, kid)
	// A card in the log but not in the map: the operator logs a reset of bob to its
	// card, and keeps the map as it was.
	// Each call has its own copy of the card: the subtests run in parallel, and the
	// log grows as they register their users.
	inLogOnly := func() (*forgedView, *cardv1.Card) {
		real := op.leaves()
		leaves := append(real, op.leaf(bob.identity, ktv1.LogEventKind_LOG_EVENT_KIND_RESET, forgedParsed.ID))
		c := proto.Clone(forged).(*cardv1.Card)
		c.LogIndex = uint64(len(real))
		return op.forge(leaves, func(i int) bool { return i == len(real) }).card(c), c
	}
	rogue, err := kt.NewLogSigner(op.signer.Name(), bytes.Repeat([]byte{5}, 32))
	if err != nil {
		t.Fatal(err)
	}
	bobsAnswer := func(fn func(r *cardv1.ProvedCard, all []*cardv1.ProvedCard)) func(string, any, any, error) error {
		return onReplies(func(reply any) {
			if r, ok := reply.(*cardv1.SearchCardsWithProofsResponse); ok {
				for _, res := range r.GetResults() {
					if res.GetProof().GetIdentity() == bob.identity {
						fn(res, r.GetResults())
					}
				}
			}
		})
	}
	for i, tc := range []struct {
		name   string
		tamper func() func(string, any, any, error) error
		want   []error
	}{
		{"a card with no proof", func() func(string, any, any, error) error {
			return bobsAnswer(func(r *cardv1.ProvedCard, _ []*cardv1.ProvedCard) { r.Proof = nil })
		}, []error{sdk.ErrUnprovedCard}},
		{"a map entry that is not the one the root commits to", func() func(string, any, any, error) error {
			return bobsAnswer(func(r *cardv1.ProvedCard, _ []*cardv1.ProvedCard) {
				v, _ := kt.ParseMapValue(r.GetProof().GetMapValue())
				v.LatestLogIndex++
				r.Proof.MapValue, _ = kt.EncodeMapValue(v)
			})
		}, []error{sdk.ErrUnprovedCard, kt.ErrBadProof}},
		{"an inclusion proof that does not verify", func() func(string, any, any, error) error {
			return bobsAnswer(func(r *cardv1.ProvedCard, _ []*cardv1.ProvedCard) { r.Proof.InclusionHashes[0] ^= 1 })
		}, []error{sdk.ErrUnprovedCard, kt.ErrBadProof}},
		{"packed inclusion hashes a byte short", func() func(string, any, any, error) error {
			return bobsAnswer(func(r *cardv1.ProvedCard, _ []*cardv1.ProvedCard) {
				r.Proof.InclusionHashes = r.Proof.InclusionHashes[:len(r.Proof.InclusionHashes)-1]
			})
		}, []error{sdk.ErrUnprovedCard, kt.ErrMalformed}},
		{"packed map sibling hashes a byte long", func() func(string, any, any, error) error {
			return bobsAnswer(func(r *cardv1.ProvedCard, _ []*cardv1.ProvedCard) {
				r.Proof.MapProof.SiblingHashes = append(r.Proof.MapProof.SiblingHashes, 0)
			})
		}, []error{sdk.ErrUnprovedCard, kt.ErrMalformed}},
		{"a card that is not the one the map names, beside the real proof", func() func(string, any, any, error) error {
			return bobsAnswer(func(r *cardv1.ProvedCard, _ []*cardv1.ProvedCard) { r.Card = proto.Clone(forged).(*cardv1.Card) })
		}, []error{sdk.ErrUnprovedCard}},
		{"another identity's proof", func() func(string, any, any, error) error {
			return bobsAnswer(func(r *cardv1.ProvedCard, _ []*cardv1.ProvedCard) {
				r.Proof = proto.Clone(carolProof).(*ktv1.LookupProof)
				r.Proof.Identity = bob.identity
			})
		}, []error{sdk.ErrUnprovedCard, kt.ErrBadProof}},
		{"a card in the log but not in the map, served with its log entry", func() func(string, any, any, error) error {
			v, forged := inLogOnly()
			v.edit = func(id string, r *cardv1.ProvedCard) {
				if id == bob.identity {
					v.answerWith(r, forged)
				}
			}
			return v.serve
		}, []error{sdk.ErrUnprovedCard, kt.ErrBadProof}},
		{"a map entry naming a card the map does not hold", func() func(string, any, any, error) error {
			v, forged := inLogOnly()
			v.edit = func(id string, r *cardv1.ProvedCard) {
				if id == bob.identity {
					r.Proof.MapValue, _ = kt.EncodeMapValue(&ktv1.MapValue{Version: kt.Version, CardId: forgedParsed.ID, CardLogIndex: forged.LogIndex, LatestLogIndex: forged.LogIndex})
					v.answerWith(r, forged)
				}
			}
			return v.serve
		}, []error{sdk.ErrUnprovedCard, kt.ErrBadProof}},
		{"a checkpoint whose signature does not verify", func() func(string, any, any, error) error {
			return onReplies(func(reply any) {
				if r, ok := reply.(*cardv1.SearchCardsWithProofsResponse); ok {
					r.Checkpoint = badSignature(t, r.Checkpoint)
				}
			})
		}, []error{sdk.ErrUnprovedCard, kt.ErrBadSignature}},
		{"a checkpoint signed by another log key", func() func(string, any, any, error) error {
			return onReplies(func(reply any) {
				if r, ok := reply.(*cardv1.SearchCardsWithProofsResponse); ok {
					cp, _, _ := bytes.Cut(r.Checkpoint, []byte("\n\n"))
					parsed, err := kt.ParseCheckpoint(string(cp) + "\n")
					if err != nil {
						t.Error(err)
						return
					}
					r.Checkpoint, _ = kt.SignCheckpoint(parsed, rogue)
				}
			})
		}, []error{sdk.ErrUnknownLogKey, kt.ErrUnknownLogKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var tp tamperer
			alice := newKTDevice(t, n, app, fmt.Sprintf("alice%d", i), "", &tp, nil)
			mustRegister(t, alice)
			if _, err := alice.LookupCards(ctx, alice.identity); err != nil { // her log key and checkpoint, pinned
				t.Fatal(err)
			}
			tp.set(tc.tamper())
			defer tp.set(nil)
			wantRefused(t, alice.device, bob.identity, tc.want...)
		})
	}
	// The real card, proved, is bob's.
	var tp tamperer
	alice := newKTDevice(t, n, app, "alice", "", &tp, nil)
	mustRegister(t, alice)
	found, err := alice.FindCards(ctx, bob.identity)
	if err != nil || !bytes.Equal(found[bob.identity].ID, bobCard.ID) {
		t.Fatalf("without the attacks, FindCards = %v, %v; want bob's card", found, err)
	}
}

// TestKeyTransparencyCatchesARewrittenLog: alice's client kept a checkpoint of the
// real log. The operator rewrites the log (bob's publication replaced by one of its
// own card) and signs it with the real log key, at the same size (a fork) or longer.
// The client refuses both (ErrLogInconsistent, with both signed checkpoints), and so
// does its next run, from the checkpoint it kept; it never encrypts to the forged
// card. A checkpoint older than the kept one and consistent with it is used, and the
// kept one stays.
func TestKeyTransparencyCatchesARewrittenLog(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	bob, bobCard := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	var tp tamperer
	dir := t.TempDir()
	alice := newKTDevice(t, n, app, "alice", dir, &tp, nil)
	mustRegister(t, alice)
	if _, err := alice.LookupCards(ctx, alice.identity, bob.identity); err != nil {
		t.Fatal(err)
	}
	kept, err := alice.KeptCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	op := newOperatorLog(t, n, app.ID)
	key, kid := operatorKey(t, n)
	forged, _, forgedParsed := forgedCard(t, bob.identity, nil, nil, key, kid)
	real := op.leaves()
	if uint64(len(real)) != kept.Size {
		t.Fatalf("the log has %d entries, the client kept a checkpoint of %d", len(real), kept.Size)
	}
	rewritten := func() [][]byte {
		out := append([][]byte(nil), real...)
		for i := range out {
			leaf, _ := kt.ParseLeaf(out[i])
			if bytes.Equal(leaf.GetCardId(), bobCard.ID) {
				out[i] = op.leaf(bob.identity, ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, forgedParsed.ID)
				forged.LogIndex = uint64(i)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		leaves [][]byte
	}{
		{"the same size with another root (a fork)", rewritten()},
		{"a longer log whose beginning was rewritten", append(rewritten(), op.leaf(unknownIdentity(t), ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION, bytes.Repeat([]byte{1}, 32)))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := op.forge(tc.leaves, nil).card(forged)
			tp.set(v.serve)
			defer tp.set(nil)
			env, err := alice.Encrypt(ctx, []byte("for bob"), bob.identity)
			var incons *sdk.LogInconsistentError
			if !errors.As(err, &incons) || !errors.Is(err, sdk.ErrLogInconsistent) || !errors.Is(err, kt.ErrInconsistent) || env != nil {
				t.Fatalf("Encrypt against a rewritten log: %v (envelope: %v); want a *LogInconsistentError and nothing encrypted", err, env != nil)
			}
			k, err1 := kt.OpenCheckpoint(incons.Kept, logKey(t, n))
			s, err2 := kt.OpenCheckpoint(incons.Served, logKey(t, n))
			if err1 != nil || err2 != nil || k.Size != kept.Size || s.Size != v.cp.Size || k.LogRoot == s.LogRoot {
				t.Errorf("the evidence: kept %+v (%v), served %+v (%v); want both checkpoints, signed by the log key", k, err1, s, err2)
			}
			// The next run of the client, from the checkpoint it kept.
			again := newKTDevice(t, n, app, "alice", dir, &tp, nil)
			if _, err := again.FindCards(ctx, bob.identity); !errors.Is(err, sdk.ErrLogInconsistent) {
				t.Errorf("a new client on the same files: %v; want ErrLogInconsistent", err)
			}
		})
	}
	t.Run("an older checkpoint, a prefix of the kept one", func(t *testing.T) {
		v := op.forge(real[:len(real)-1], nil)
		tp.set(func(method string, req, reply any, err error) error {
			if _, ok := reply.(*cardv1.GetConsistencyProofResponse); ok {
				return err // the real log's proof that the older one is its prefix
			}
			return v.serve(method, req, reply, err)
		})
		defer tp.set(nil)
		if _, err := alice.LookupCards(ctx, bob.identity); err != nil {
			t.Fatalf("a lookup at an older, consistent checkpoint: %v", err)
		}
		if now, err := alice.KeptCheckpoint(); err != nil || now.Size != kept.Size {
			t.Errorf("kept checkpoint after an older one: %+v, %v; want the kept one, of %d entries", now, err, kept.Size)
		}
	})
	// The real log again: consistent with what was kept.
	if found, err := alice.FindCards(ctx, bob.identity); err != nil || !bytes.Equal(found[bob.identity].ID, bobCard.ID) {
		t.Fatalf("the real log after the attacks: %v, %v", found, err)
	}
}

// TestKeyTransparencyLogKeys: a client given the log key (Config.LogKeys) never asks
// the server for it; one given another key refuses every checkpoint
// (ErrUnknownLogKey); a malformed one is refused at New. A client that pinned the key
// on first use refuses a server that swaps it, even one that names the new key.
func TestKeyTransparencyLogKeys(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	bob, _ := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	real := logKey(t, n)
	rogue, err := kt.NewLogSigner(newOperatorLog(t, n, app.ID).signer.Name(), bytes.Repeat([]byte{6}, 32))
	if err != nil {
		t.Fatal(err)
	}
	var log callLog
	shipped := newKTDevice(t, n, app, "alice", "", nil, func(c *sdk.Config) {
		c.LogKeys = []string{real}
		c.DialOptions = []grpc.DialOption{log.interceptor()}
	})
	if _, err := shipped.FindCards(ctx, bob.identity); err != nil {
		t.Fatal(err)
	}
	for _, m := range log.take() {
		if m == "GetLogKey" {
			t.Error("a client given the log key asked the server for it")
		}
	}
	other := newKTDevice(t, n, app, "carol", "", nil, func(c *sdk.Config) { c.LogKeys = []string{rogue.VerifierKey()} })
	if _, err := other.FindCards(ctx, bob.identity); !errors.Is(err, sdk.ErrUnknownLogKey) || !errors.Is(err, kt.ErrUnknownLogKey) {
		t.Errorf("a client given another log key: %v; want ErrUnknownLogKey", err)
	}
	if _, err := sdk.New(ctx, sdk.Config{Addr: n.GRPC, Token: app.TokenFunc(bob.identity), KeystorePath: t.TempDir() + "/ks", NoPassphrase: true, LogKeys: []string{"not a key"}}); err == nil {
		t.Error("a malformed Config.LogKeys was accepted")
	}

	// Pinned on first use, then swapped.
	var tp tamperer
	dave := newKTDevice(t, n, app, "dave", "", &tp, nil)
	if _, err := dave.FindCards(ctx, bob.identity); err != nil {
		t.Fatal(err)
	}
	tp.set(onReplies(func(reply any) {
		switch r := reply.(type) {
		case *cardv1.SearchCardsWithProofsResponse:
			body, _, _ := bytes.Cut(r.Checkpoint, []byte("\n\n"))
			cp, _ := kt.ParseCheckpoint(string(body) + "\n")
			r.Checkpoint, _ = kt.SignCheckpoint(cp, rogue)
		case *cardv1.GetLogKeyResponse:
			r.VerifierKey, r.PublicKey = rogue.VerifierKey(), rogue.PublicKey()
		}
	}))
	if _, err := dave.FindCards(ctx, bob.identity); !errors.Is(err, sdk.ErrUnknownLogKey) {
		t.Errorf("a swapped log key after the first use: %v; want ErrUnknownLogKey", err)
	}
}

// TestMonitorDetectsACardItsDeviceDidNotPublish: bob's device checks his identity.
// His card: no alert. A rotation by another device of his (from keys his device
// holds): no alert. A card published for him by someone else (here the app backend's
// reset grant and a device it controls, what a malicious operator can do; every
// contact's client would accept the card, proved, as a key change): an
// *UnexpectedCardError naming the card and its log entry, reported to
// OnKeyTransparencyAlert, by Monitor and by the background monitoring. His card
// revoked by a thief of his token: an alert too; revoked by this device: none.
func TestMonitorDetectsACardItsDeviceDidNotPublish(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	bob := newKTDevice(t, n, app, "bob", "", nil, nil)
	first := registeredCard(t, bob)
	report, err := bob.Monitor(ctx)
	if err != nil || len(report.Alerts) != 0 || !bytes.Equal(report.Lookup.Card.ID, first.ID) {
		t.Fatalf("Monitor after his own publication = %+v, %v; want his card and no alert", report, err)
	}
	// Another device of bob's, with his keys, rotates.
	other := newKTDevice(t, n, app, "bob", copyDevice(t, bob), nil, nil)
	rotated := rotatedCard(t, other)
	report, err = bob.Monitor(ctx) // waits for the checkpoint of the rotation
	if err != nil || !bytes.Equal(report.Lookup.Card.ID, rotated.ID) {
		t.Fatalf("Monitor after his other device's rotation = %+v, %v; want its card and no alert", report, err)
	}
	// Someone else publishes a card for bob.
	background := newKTDevice(t, n, app, "bob", copyDevice(t, bob), nil, func(c *sdk.Config) { c.MonitorInterval = 100 * time.Millisecond })
	impostor := newKTDevice(t, n, app, "bob", "", nil, nil)
	reset, err := impostor.ResetKeys(ctx, app.ResetGrant(t, bob.identity))
	if err != nil {
		t.Fatal(err)
	}
	report, err = bob.Monitor(ctx)
	var alert *sdk.UnexpectedCardError
	if !errors.As(err, &alert) || !errors.Is(err, sdk.ErrUnexpectedCard) {
		t.Fatalf("Monitor after a card published by someone else: %v; want an *UnexpectedCardError", err)
	}
	if alert.Reason != sdk.AlertForeignCard || !bytes.Equal(alert.CardID, reset.ID) || alert.LogIndex != reset.LogIndex || alert.Kind != ktv1.LogEventKind_LOG_EVENT_KIND_RESET || alert.Identity != bob.identity || report == nil || len(report.Alerts) != 1 {
		t.Fatalf("alert %+v (report %+v); want the reset card %x at log entry %d", alert, report, reset.ID[:4], reset.LogIndex)
	}
	select {
	case got := <-bob.alerts:
		if !errors.As(got, &alert) || !bytes.Equal(alert.CardID, reset.ID) {
			t.Errorf("OnKeyTransparencyAlert got %v", got)
		}
	default:
		t.Error("OnKeyTransparencyAlert was not called")
	}
	deadline := time.After(10 * time.Second)
	for found := false; !found; {
		select {
		case got := <-background.alerts:
			found = errors.As(got, &alert) && bytes.Equal(alert.CardID, reset.ID)
		case <-deadline:
			t.Fatal("the background monitoring did not report the card within 10 s")
		}
	}

	t.Run("revoked by a thief of the token", func(t *testing.T) {
		carol := newKTDevice(t, n, app, "carol", "", nil, nil)
		card := registeredCard(t, carol)
		if _, err := carol.Monitor(ctx); err != nil {
			t.Fatal(err)
		}
		thief := newKTDevice(t, n, app, "carol", "", nil, nil)
		if _, err := cardv1.NewCardServiceClient(thief.Conn()).RevokeCard(ctx, &cardv1.RevokeCardRequest{CardId: card.ID}); err != nil {
			t.Fatal(err)
		}
		_, err = carol.Monitor(ctx)
		if !errors.As(err, &alert) || alert.Reason != sdk.AlertRevokedElsewhere || !bytes.Equal(alert.CardID, card.ID) {
			t.Fatalf("Monitor after a revocation by someone else: %v; want AlertRevokedElsewhere", err)
		}
	})
	t.Run("revoked by this device", func(t *testing.T) {
		dave := newKTDevice(t, n, app, "dave", "", nil, nil)
		mustRegister(t, dave)
		if _, err := dave.Monitor(ctx); err != nil {
			t.Fatal(err)
		}
		if err := dave.RevokeCard(ctx); err != nil {
			t.Fatal(err)
		}
		if report, err := dave.Monitor(ctx); err != nil || report.Lookup.Card != nil {
			t.Fatalf("Monitor after this device's own revocation: %+v, %v; want no card and no alert", report, err)
		}
	})
}

// TestMonitorDetectsWhatTheMapHides: what no contact's client can see, a map that does
// not show bob's newer card (every checkpoint still extends the last, and every proof
// verifies), bob's own device does: the map names an older card of his. So it does
// a card of his published a second time (something replaced it in between), and the
// revocation of a card he never had (a card shown for him and withdrawn).
func TestMonitorDetectsWhatTheMapHides(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	short := func(c *sdk.Config) { c.KeyTransparencyWait = 500 * time.Millisecond }
	bob := newKTDevice(t, n, app, "bob", "", nil, nil)
	first := registeredCard(t, bob)
	if _, err := bob.Monitor(ctx); err != nil {
		t.Fatal(err)
	}
	rotated := rotatedCard(t, bob)
	if _, err := bob.LookupCards(ctx, bob.identity); err != nil { // the rotation is in the log
		t.Fatal(err)
	}
	op := newOperatorLog(t, n, app.ID)
	noise := func() []byte {
		return op.leaf(unknownIdentity(t), ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION, bytes.Repeat([]byte{2}, 32))
	}
	attack := func(t *testing.T, v *forgedView) *sdk.UnexpectedCardError {
		t.Helper()
		var tp tamperer
		tp.set(v.serve)
		d := newKTDevice(t, n, app, "bob", copyDevice(t, bob), &tp, short)
		_, err := d.Monitor(ctx)
		var alert *sdk.UnexpectedCardError
		if !errors.As(err, &alert) {
			t.Fatalf("Monitor: %v; want an *UnexpectedCardError", err)
		}
		return alert
	}
	t.Run("a map that hides the newer card", func(t *testing.T) {
		real := op.leaves()
		v := op.forge(append(real, noise()), func(i int) bool { return i == int(rotated.LogIndex) }).card(storedCard(t, bob, first.ID))
		if p := v.prove(bob.identity); p.GetLeafIndex() != first.LogIndex {
			t.Fatalf("the forged map names entry %d for bob; want his first card's, %d", p.GetLeafIndex(), first.LogIndex)
		}
		if a := attack(t, v); a.Reason != sdk.AlertHidden || !bytes.Equal(a.CardID, first.ID) {
			t.Errorf("alert %+v; want AlertHidden, naming the older card the map shows", a)
		}
	})
	// The honest log, seen once more: bob's device now remembers his card's entry.
	if report, err := bob.Monitor(ctx); err != nil || !bytes.Equal(report.Lookup.Card.ID, rotated.ID) {
		t.Fatalf("Monitor of the real log: %+v, %v", report, err)
	}
	t.Run("his card published again", func(t *testing.T) {
		real := op.leaves()
		v := op.forge(append(real, op.leaf(bob.identity, ktv1.LogEventKind_LOG_EVENT_KIND_RESET, rotated.ID)), nil)
		if a := attack(t, v); a.Reason != sdk.AlertRepublished || !bytes.Equal(a.CardID, rotated.ID) || a.LogIndex != uint64(len(real)) {
			t.Errorf("alert %+v; want AlertRepublished at entry %d", a, len(real))
		}
	})
	t.Run("the revocation of a card he never had", func(t *testing.T) {
		real := op.leaves()
		never := bytes.Repeat([]byte{3}, 32)
		v := op.forge(append(real, op.leaf(bob.identity, ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION, never)), nil)
		if a := attack(t, v); a.Reason != sdk.AlertForeignRevocation || !bytes.Equal(a.CardID, never) || a.LogIndex != uint64(len(real)) {
			t.Errorf("alert %+v; want AlertForeignRevocation at entry %d", a, len(real))
		}
	})
}

// TestKeyTransparencyRefusesASignerCardTheLogDoesNotShow: a message "from bob", to
// alice who has never looked bob up, signed with a card the operator made, served by
// id as an old (superseded) card of his, dated within its claimed lifetime. Without
// key transparency nothing vouched for such a card (no pin yet); now the client pins
// bob's current card as the log proves it, and the old card must be one the log
// shows bob had: its log entry, log_index, is not its publication, so it is refused
// (ErrUnprovedCard). A real old card of bob's, proved by its entry, is accepted.
func TestKeyTransparencyRefusesASignerCardTheLogDoesNotShow(t *testing.T) {
	t.Parallel()
	n, app := startNode(t)
	ctx := context.Background()
	bob, first := registeredDevice(t, n, app, "bob", e2ee.SuiteX25519)
	ks, err := keystore.Open(bob.keystore, []byte("passphrase of bob"))
	if err != nil {
		t.Fatal(err)
	}
	firstKey, _ := ks.Current()
	if _, err := bob.RotateKeys(ctx); err != nil {
		t.Fatal(err)
	}
	key, kid := operatorKey(t, n)
	forged, forgedKeys, parsed := forgedCard(t, bob.identity, nil, nil, key, kid)
	forged.Status = cardv1.CardStatus_CARD_STATUS_SUPERSEDED
	forged.PublishedAt, forged.SupersededAt = timestamppb.New(time.Now().Add(-time.Hour)), timestamppb.Now()
	forged.LogIndex = first.LogIndex // the entry of bob's real first card
	var tp tamperer
	tp.set(func(method string, req, reply any, err error) error {
		if r, ok := req.(*cardv1.GetCardRequest); ok && bytes.Equal(r.GetCardId(), parsed.ID) {
			reply.(*cardv1.GetCardResponse).Card = proto.Clone(forged).(*cardv1.Card)
			return nil
		}
		return err
	})
	for _, tc := range []struct {
		name   string
		keys   *e2ee.KeyPair
		cardID []byte
		want   error
	}{
		{"a card the operator made", forgedKeys, parsed.ID, sdk.ErrUnprovedCard},
		{"bob's real first card", firstKey, first.ID, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			alice := newKTDevice(t, n, app, "alice-"+map[bool]string{true: "a", false: "b"}[tc.want != nil], "", &tp, nil)
			aliceCard := registeredCard(t, alice)
			msg, err := e2ee.Encrypt(tc.keys, tc.cardID, []*e2ee.Card{aliceCard.Card}, []byte("it's me, bob"), time.Now().Add(-time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			got, err := alice.Decrypt(ctx, msg, bob.identity)
			if tc.want == nil && (err != nil || string(got) != "it's me, bob") || tc.want != nil && (!errors.Is(err, tc.want) || got != nil) {
				t.Errorf("Decrypt = %q, %v; want %v", got, err, tc.want)
			}
		})
	}
}
