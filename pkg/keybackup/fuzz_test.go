package keybackup

import (
	"errors"
	"testing"
)

// FuzzParseRecoveryKey: whatever the user types, ParseRecoveryKey never panics, fails
// only with ErrRecoveryKey, and a key it accepts formats back to a text that parses to
// the same key.
func FuzzParseRecoveryKey(f *testing.F) {
	var k RecoveryKey
	for i := range k {
		k[i] = byte(i * 13)
	}
	f.Add(k.String())
	f.Add("0000-0000-0000-0000-0000-0000-0000-0000-0000")
	f.Add("oooo iiii llll")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseRecoveryKey(s)
		if err != nil {
			if !errors.Is(err, ErrRecoveryKey) {
				t.Fatalf("ParseRecoveryKey(%q): %v, not ErrRecoveryKey", s, err)
			}
			return
		}
		again, err := ParseRecoveryKey(got.String())
		if err != nil || again != got {
			t.Fatalf("%q parses to %x, which formats as %q and parses to %x, %v", s, got, got.String(), again, err)
		}
	})
}

// FuzzFinalize: whatever a service answers, Finalize never panics and fails only with
// ErrInvalid or ErrBadProof.
func FuzzFinalize(f *testing.F) {
	s := newTestServer(f)
	bl, err := Blind(alice, []byte("hunter2"))
	if err != nil {
		f.Fatal(err)
	}
	ev, proof := s.evaluate(bl.Element())
	f.Add(ev, proof, s.pk)
	f.Add(ev, proof[:32], s.pk)
	f.Fuzz(func(t *testing.T, ev, proof, pk []byte) {
		out, err := bl.Finalize(ev, proof, pk)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrBadProof) {
				t.Fatalf("Finalize: %v", err)
			}
			return
		}
		if len(out.Value) != OutputSize {
			t.Fatalf("output of %d bytes", len(out.Value))
		}
	})
}
