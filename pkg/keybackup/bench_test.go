package keybackup

import (
	"testing"

	"github.com/umbra-e2ee/umbra/pkg/argon2id"
)

// The client's cost of a restore, split so that a restore's latency can be told apart
// into network, server, Argon2id and the rest of the client:
//
//	go test ./pkg/keybackup -run '^$' -bench . -count 6
//
// BenchmarkRestoreClient is everything a client computes in a restore with the
// default parameters (blind, finalize with the proof check, Argon2id, HKDF, open a
// 4 KiB bundle); BenchmarkRestoreClientArgon2id is the Argon2id step alone, and
// BenchmarkRestoreClientWithoutArgon2id the rest. BenchmarkServerEvaluate is the
// service's evaluation with its proof, for reference.

type restoreBench struct {
	s         *testServer
	p         Params
	stretched []byte
	nonce, ct []byte
}

func newRestoreBench(b *testing.B) *restoreBench {
	b.Helper()
	s := newTestServer(b)
	kdf, err := NewArgon2id(argon2id.Default, nil)
	if err != nil {
		b.Fatal(err)
	}
	p := Params{Version: 1, AEAD: ChaCha20Poly1305, KDF: kdf}
	out := s.run(alice, []byte("hunter2"))
	stretched, err := Stretch(out, kdf)
	if err != nil {
		b.Fatal(err)
	}
	keys, err := DeriveKeys(out, p)
	if err != nil {
		b.Fatal(err)
	}
	nonce, ct, err := keys.Seal(nil, make([]byte, 4096))
	if err != nil {
		b.Fatal(err)
	}
	return &restoreBench{s: s, p: p, stretched: stretched, nonce: nonce, ct: ct}
}

// run is one client restore; the server's evaluation is not timed.
func (r *restoreBench) run(b *testing.B, argon2id bool) {
	bl, err := Blind(alice, []byte("hunter2"))
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	ev, proof := r.s.evaluate(bl.Element())
	b.StartTimer()
	out, err := bl.Finalize(ev, proof, r.s.pk)
	if err != nil {
		b.Fatal(err)
	}
	var keys *Keys
	if argon2id {
		keys, err = DeriveKeys(out, r.p)
	} else {
		keys, err = deriveFromStretched(out, r.p, r.stretched)
	}
	if err != nil {
		b.Fatal(err)
	}
	if _, err := keys.Open(r.nonce, r.ct); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkRestoreClient(b *testing.B) {
	r := newRestoreBench(b)
	for b.Loop() {
		r.run(b, true)
	}
}

func BenchmarkRestoreClientWithoutArgon2id(b *testing.B) {
	r := newRestoreBench(b)
	for b.Loop() {
		r.run(b, false)
	}
}

func BenchmarkRestoreClientArgon2id(b *testing.B) {
	r := newRestoreBench(b)
	out := &Output{Binding: alice, PublicKey: r.s.pk, Value: make([]byte, OutputSize)}
	for b.Loop() {
		if _, err := Stretch(out, r.p.KDF); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkServerEvaluate(b *testing.B) {
	r := newRestoreBench(b)
	bl, err := Blind(alice, []byte("hunter2"))
	if err != nil {
		b.Fatal(err)
	}
	el := bl.Element()
	for b.Loop() {
		r.s.evaluate(el)
	}
}
