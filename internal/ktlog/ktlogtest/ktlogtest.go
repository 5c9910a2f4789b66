// Package ktlogtest is a card service's key transparency API that tests control: a log
// key and any number of views of the log, each a log and map built with pkg/kt's
// builders and served over gRPC on its own loopback address. An honest log has one
// view; a malicious one shows two callers different views (a split view), serves a
// rewritten log, or signs checkpoints whose roots are not those of its entries.
package ktlogtest

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// Origin is the fake log's origin.
const Origin = "kt.test/log"

// Log is the fake log's key: Signer, and during a log key rotation Next beside it.
// Rotate and Retire change them between appends, not while a view signs.
type Log struct {
	Signer *kt.LogSigner
	// Next, when set, signs every checkpoint beside Signer.
	Next *kt.LogSigner
}

// Rotate starts a log key rotation, as the card service's RotateLogKey does: a new key
// of the same origin signs every checkpoint beside the current one. It returns it.
func (l *Log) Rotate(t testing.TB) *kt.LogSigner {
	t.Helper()
	s, err := kt.NewLogSigner(Origin, bytes.Repeat([]byte{0x5b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	l.Next = s
	return s
}

// Retire ends the rotation: the new key alone signs from now on.
func (l *Log) Retire() { l.Signer, l.Next = l.Next, nil }

// New returns a log with a fixed key.
func New(t testing.TB) *Log {
	t.Helper()
	s, err := kt.NewLogSigner(Origin, bytes.Repeat([]byte{0x5a}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return &Log{Signer: s}
}

// VerifierKey is the log key's verifier key.
func (l *Log) VerifierKey() string { return l.Signer.VerifierKey() }

// Sign signs any checkpoint body with the log key (both keys during a rotation).
func (l *Log) Sign(t testing.TB, cp *kt.Checkpoint) []byte {
	t.Helper()
	signers := []*kt.LogSigner{l.Signer}
	if l.Next != nil {
		signers = append(signers, l.Next)
	}
	signed, err := kt.SignCheckpoint(cp, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// View is one history of the log, served at its own address.
type View struct {
	log *Log
	mu  sync.Mutex
	mem *kt.Memory
	// signed is the checkpoint served as the latest.
	signed []byte
	// badProofs makes every consistency proof wrong.
	badProofs bool
}

// NewView returns an empty view.
func (l *Log) NewView() *View { return &View{log: l, mem: kt.NewMemory()} }

// Fork returns a copy of v that can go its own way.
func (v *View) Fork(t testing.TB) *View {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	f := v.log.NewView()
	if len(v.mem.Leaves) > 0 {
		if _, err := f.mem.Append(Origin, v.mem.Leaves...); err != nil {
			t.Fatal(err)
		}
	}
	f.signed = v.signed
	return f
}

// Append appends leaves, and signs and serves the checkpoint of the new state, which
// it returns.
func (v *View) Append(t testing.TB, leaves ...[]byte) []byte {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	cp, err := v.mem.Append(Origin, leaves...)
	if err != nil {
		t.Fatal(err)
	}
	v.signed = v.log.Sign(t, cp)
	return v.signed
}

// Checkpoint is the body of the view's current state (honest roots).
func (v *View) Checkpoint(t testing.TB) *kt.Checkpoint {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	root, err := kt.LogRoot(v.mem.Log, uint64(len(v.mem.Leaves)))
	if err != nil {
		t.Fatal(err)
	}
	mapRoot, err := kt.MapRoot(v.mem.Map)
	if err != nil {
		t.Fatal(err)
	}
	return &kt.Checkpoint{Origin: Origin, Size: uint64(len(v.mem.Leaves)), LogRoot: [kt.HashSize]byte(root), MapRoot: mapRoot}
}

// Serve serves signed as the latest checkpoint, whatever it says.
func (v *View) Serve(signed []byte) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.signed = signed
}

// BreakProofs makes the view's consistency proofs wrong from now on.
func (v *View) BreakProofs() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.badProofs = true
}

// Listen serves the view's API over gRPC on a loopback address, until the test ends,
// and returns the address.
func (v *View) Listen(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	cardv1.RegisterCardServiceServer(srv, &server{v: v})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

type server struct {
	cardv1.UnimplementedCardServiceServer
	v *View
}

func (s *server) GetLogKey(context.Context, *cardv1.GetLogKeyRequest) (*cardv1.GetLogKeyResponse, error) {
	return &cardv1.GetLogKeyResponse{Origin: Origin, VerifierKey: s.v.log.VerifierKey(), PublicKey: s.v.log.Signer.PublicKey()}, nil
}

func (s *server) GetCheckpoint(context.Context, *cardv1.GetCheckpointRequest) (*cardv1.GetCheckpointResponse, error) {
	s.v.mu.Lock()
	defer s.v.mu.Unlock()
	if s.v.signed == nil {
		return nil, status.Error(codes.Unavailable, "no checkpoint yet")
	}
	return &cardv1.GetCheckpointResponse{Checkpoint: s.v.signed, Size: uint64(len(s.v.mem.Leaves))}, nil
}

func (s *server) GetConsistencyProof(_ context.Context, req *cardv1.GetConsistencyProofRequest) (*cardv1.GetConsistencyProofResponse, error) {
	s.v.mu.Lock()
	defer s.v.mu.Unlock()
	from, to := req.GetFromSize(), req.GetToSize()
	if from < 1 || from > to {
		return nil, status.Errorf(codes.InvalidArgument, "from_size %d, to_size %d", from, to)
	}
	if to > uint64(len(s.v.mem.Leaves)) {
		return nil, status.Errorf(codes.OutOfRange, "to_size %d past the log of %d", to, len(s.v.mem.Leaves))
	}
	proof, err := kt.ConsistencyProof(s.v.mem.Log, from, to)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if s.v.badProofs {
		for i := range proof {
			proof[i] = bytes.Repeat([]byte{0xbb}, kt.HashSize)
		}
		if len(proof) == 0 && from != to {
			proof = [][]byte{bytes.Repeat([]byte{0xbb}, kt.HashSize)}
		}
	}
	return &cardv1.GetConsistencyProofResponse{Proof: proof}, nil
}

func (s *server) GetLogEntries(_ context.Context, req *cardv1.GetLogEntriesRequest) (*cardv1.GetLogEntriesResponse, error) {
	s.v.mu.Lock()
	defer s.v.mu.Unlock()
	n := uint64(len(s.v.mem.Leaves))
	if req.GetStart() >= n {
		return nil, status.Errorf(codes.OutOfRange, "start %d past the log of %d", req.GetStart(), n)
	}
	count := uint64(req.GetCount())
	if count == 0 {
		count = 100
	}
	end := min(req.GetStart()+count, n)
	return &cardv1.GetLogEntriesResponse{Entries: s.v.mem.Leaves[req.GetStart():end]}, nil
}

// Leaf returns a publication's log entry for identity of app, with a card id made of
// card.
func Leaf(t testing.TB, app, identity string, kind ktv1.LogEventKind, card byte, at int64) []byte {
	t.Helper()
	key := kt.MapKey(app, identity)
	l := &ktv1.LogLeaf{Version: kt.Version, MapKey: key[:], Kind: kind, CardId: bytes.Repeat([]byte{card}, kt.HashSize), OccurredAtUnixNanos: at}
	b, err := kt.EncodeLeaf(l)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Publications returns n publications of distinct identities, numbered from first.
func Publications(t testing.TB, first, n int) [][]byte {
	t.Helper()
	out := make([][]byte, n)
	for i := range out {
		id := first + i
		out[i] = Leaf(t, "app_test", "u_"+string(rune('a'+id%26))+string(rune('a'+id/26%26))+"000000000000000000000000000000", ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, byte(id), int64(id+1))
	}
	return out
}
