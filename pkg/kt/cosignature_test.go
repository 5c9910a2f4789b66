package kt

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// testWitness returns a witness signer named name with a seed made of b.
func testWitness(t *testing.T, name string, b byte) *WitnessSigner {
	t.Helper()
	s, err := NewWitnessSigner(name, bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testSignedCheckpoint returns a log of n entries' signed checkpoint and its log key.
func testSignedCheckpoint(t *testing.T, n int) ([]byte, string) {
	t.Helper()
	signer, err := NewLogSigner("umbra.test/kt", bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMemory()
	var leaves [][]byte
	for i := range n {
		leaves = append(leaves, testLeaf(t, i))
	}
	_, signed := appendSigned(t, m, signer, leaves...)
	return signed, signer.VerifierKey()
}

func testLeaf(t *testing.T, i int) []byte {
	t.Helper()
	return leafBytes(t, "u_"+strings.Repeat(string(rune('a'+i%26)), 32), ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, 0x40+byte(i), 0, int64(i+1))
}

func TestCosignRoundTrip(t *testing.T) {
	signed, logKey := testSignedCheckpoint(t, 3)
	w := testWitness(t, "witness.test/w1", 1)
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	cosigned, err := w.Cosign(signed, at)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(cosigned, signed) || bytes.Count(cosigned, []byte("\n— ")) != 2 {
		t.Fatalf("the cosigned note is not the signed one with one line appended:\n%s", cosigned)
	}
	got, err := VerifyCosignature(cosigned, w.Key())
	if err != nil || !got.Equal(at) {
		t.Fatalf("VerifyCosignature = %v, %v; want %v", got, err, at)
	}
	// The log's signature still verifies, and the cosignature is ignored by it.
	if _, err := OpenCheckpoint(cosigned, logKey); err != nil {
		t.Fatalf("OpenCheckpoint of a cosigned checkpoint: %v", err)
	}
	// Cosigning again replaces the witness's earlier line.
	again, err := w.Cosign(cosigned, at.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(again, []byte("— witness.test/w1 ")) != 1 {
		t.Fatalf("cosigning twice left two lines of one witness:\n%s", again)
	}
	if got, err := VerifyCosignature(again, w.Key()); err != nil || !got.Equal(at.Add(time.Hour)) {
		t.Fatalf("VerifyCosignature after cosigning again = %v, %v", got, err)
	}
	// Keys survive their string forms.
	k, err := ParseWitnessKey(w.Key().String())
	if err != nil || k.String() != w.Key().String() || k.KeyHash() != w.Key().KeyHash() {
		t.Fatalf("ParseWitnessKey(String()) = %v, %v", k, err)
	}
	s, err := ParseWitnessSigner(w.String())
	if err != nil || s.Key().String() != w.Key().String() {
		t.Fatalf("ParseWitnessSigner(String()) = %v, %v", s, err)
	}
	g, err := GenerateWitnessSigner("witness.test/fresh", rand.Reader)
	if err != nil || g.Key().Name() != "witness.test/fresh" {
		t.Fatalf("GenerateWitnessSigner = %v, %v", g, err)
	}
}

// TestCosignatureRefused: a cosignature counts only over the exact body it was made
// for, by the key it names, at the time it carries.
func TestCosignatureRefused(t *testing.T) {
	signed, _ := testSignedCheckpoint(t, 3)
	w := testWitness(t, "witness.test/w1", 1)
	at := time.Unix(1_800_000_000, 0)
	cosigned, err := w.Cosign(signed, at)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := CheckpointText(cosigned)
	sigs := cosigned[len(text):]
	line := string(cosigned[bytes.LastIndex(cosigned, []byte("— witness.test/w1 ")):])
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(strings.TrimPrefix(line, "— witness.test/w1 ")))
	withRaw := func(r []byte) []byte {
		return append(bytes.Clone(cosigned[:len(cosigned)-len(line)]), "— witness.test/w1 "+base64.StdEncoding.EncodeToString(r)+"\n"...)
	}
	otherTime := bytes.Clone(raw)
	otherTime[4+7]++ // the timestamp's last byte
	otherMap := strings.Replace(text, "umbra-map ", "umbra-map A", 1)
	otherMap = otherMap[:strings.Index(otherMap, "umbra-map ")] + "umbra-map " + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32)) + "\n"
	impostor := testWitness(t, "witness.test/w1", 2)
	byImpostor, err := impostor.Cosign(signed, at)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		signed []byte
		want   error
	}{
		{"another size", append([]byte(strings.Replace(text, "\n3\n", "\n4\n", 1)), sigs...), ErrBadCosignature},
		{"another map root, same log", append([]byte(otherMap), sigs...), ErrBadCosignature},
		{"another time", withRaw(otherTime), ErrBadCosignature},
		{"a cut signature", withRaw(raw[:len(raw)-1]), ErrBadCosignature},
		{"a key of the same name", byImpostor, ErrNotWitnessed},
		{"no cosignature", signed, ErrNotWitnessed},
		{"not a note", []byte("hello\n"), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := VerifyCosignature(tc.signed, w.Key()); !errors.Is(err, tc.want) {
				t.Fatalf("VerifyCosignature = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseWitnessKeyRefuses(t *testing.T) {
	w := testWitness(t, "witness.test/w1", 1)
	good := w.Key().String()
	name, rest, _ := strings.Cut(good, "+")
	hash, key, _ := strings.Cut(rest, "+")
	_, logKey := testSignedCheckpoint(t, 1)
	raw, _ := base64.StdEncoding.DecodeString(key)
	for _, tc := range []struct{ name, vkey string }{
		{"a log key (algorithm 0x01)", logKey},
		{"algorithm 0x01 with the cosigner's key ID", name + "+" + hash + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, raw[1:]...))},
		{"a wrong key ID", name + "+00000000+" + key},
		{"another name", "witness.test/w2+" + hash + "+" + key},
		{"a short key", name + "+" + hash + "+" + base64.StdEncoding.EncodeToString(raw[:32])},
		{"not base64", name + "+" + hash + "+!!"},
		{"no key ID", name + "+" + key},
		{"a name with a space", "a b+" + hash + "+" + key},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseWitnessKey(tc.vkey); !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseWitnessKey(%q) = %v, want ErrMalformed", tc.vkey, err)
			}
		})
	}
	for _, skey := range []string{good, "PRIVATE+KEY+" + name + "+00000000+" + base64.StdEncoding.EncodeToString(append([]byte{4}, bytes.Repeat([]byte{1}, 32)...))} {
		if _, err := ParseWitnessSigner(skey); err == nil {
			t.Errorf("ParseWitnessSigner(%q) accepted it", skey)
		}
	}
}

// TestWitnessPolicy: a client's "k of these witnesses" counts only valid, present,
// distinct cosignatures of witnesses it names.
func TestWitnessPolicy(t *testing.T) {
	signed, _ := testSignedCheckpoint(t, 5)
	w1, w2, w3 := testWitness(t, "witness.test/w1", 1), testWitness(t, "witness.test/w2", 2), testWitness(t, "witness.test/w3", 3)
	stranger := testWitness(t, "witness.test/stranger", 4)
	now := time.Unix(1_800_000_000, 0)
	cosign := func(in []byte, w *WitnessSigner, at time.Time) []byte {
		t.Helper()
		out, err := w.Cosign(in, at)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	policy, err := NewWitnessPolicy(2, w1.Key().String(), w2.Key().String(), w3.Key().String())
	if err != nil {
		t.Fatal(err)
	}
	one := cosign(signed, w1, now)
	two := cosign(one, w2, now)
	w2Future := cosign(one, w2, now.Add(MaxCosignatureSkew+time.Minute))
	w2Skewed := cosign(one, w2, now.Add(MaxCosignatureSkew-time.Minute))
	withStranger := cosign(one, stranger, now)
	// w2's line made over another body, pasted under this one.
	otherSigned, _ := testSignedCheckpoint(t, 6)
	otherTwo := cosign(otherSigned, w2, now)
	pasted := append(bytes.Clone(one), otherTwo[bytes.LastIndex(otherTwo, []byte("— witness.test/w2 ")):]...)
	w1Twice := append(bytes.Clone(one), one[bytes.LastIndex(one, []byte("— witness.test/w1 ")):]...)
	for _, tc := range []struct {
		name   string
		signed []byte
		valid  int
	}{
		{"two of three", two, 2},
		{"all three", cosign(two, w3, now), 3},
		{"within the clock skew", w2Skewed, 2},
		{"one", one, -1},
		{"none", signed, -1},
		{"one and a stranger", withStranger, -1},
		{"one and one from the future", w2Future, -1},
		{"one and one over another checkpoint", pasted, -1},
		{"one witness's line twice", w1Twice, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := policy.Check(tc.signed, now)
			if tc.valid < 0 {
				var nw *NotWitnessedError
				if !errors.As(err, &nw) || !errors.Is(err, ErrNotWitnessed) {
					t.Fatalf("Check = %v, %v; want a NotWitnessedError", got, err)
				}
				return
			}
			if err != nil || len(got) != tc.valid {
				t.Fatalf("Check = %d cosignatures, %v; want %d", len(got), err, tc.valid)
			}
		})
	}

	t.Run("bad policies", func(t *testing.T) {
		sameKey, err := NewWitnessSigner("witness.test/alias", bytes.Repeat([]byte{1}, 32))
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name   string
			quorum int
			keys   []string
		}{
			{"quorum 0", 0, []string{w1.Key().String()}},
			{"quorum above the witnesses", 2, []string{w1.Key().String()}},
			{"one key under two names", 2, []string{w1.Key().String(), sameKey.Key().String()}},
			{"a bad key", 1, []string{"nope"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, err := NewWitnessPolicy(tc.quorum, tc.keys...); err == nil {
					t.Fatal("NewWitnessPolicy accepted it")
				}
			})
		}
	})
}

func TestMergeCosignatures(t *testing.T) {
	signed, _ := testSignedCheckpoint(t, 5)
	w1, w2 := testWitness(t, "witness.test/w1", 1), testWitness(t, "witness.test/w2", 2)
	at := time.Unix(1_800_000_000, 0)
	a, _ := w1.Cosign(signed, at)
	b, _ := w2.Cosign(signed, at)
	other, _ := testSignedCheckpoint(t, 6)
	c, _ := w2.Cosign(other, at)
	merged, differing, err := MergeCosignatures(signed, a, b, a, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(differing) != 1 || !bytes.Equal(differing[0], c) {
		t.Errorf("differing = %q, want the note of another body", differing)
	}
	p, _ := NewWitnessPolicy(2, w1.Key().String(), w2.Key().String())
	if got, err := p.Check(merged, at); err != nil || len(got) != 2 {
		t.Fatalf("the merged note: %d cosignatures, %v\n%s", len(got), err, merged)
	}
	if n := bytes.Count(merged, []byte("\n— ")); n != 3 {
		t.Errorf("the merged note has %d signature lines, want 3 (log, w1, w2):\n%s", n, merged)
	}
}

// FuzzCosignedCheckpoint: whatever bytes a witness or a server sends as a cosigned
// checkpoint, verifying and merging them never panics, and the policy accepts only
// the body the witness really cosigned.
func FuzzCosignedCheckpoint(f *testing.F) {
	w, err := NewWitnessSigner("witness.test/w1", bytes.Repeat([]byte{1}, 32))
	if err != nil {
		f.Fatal(err)
	}
	signer, err := NewLogSigner("umbra.test/kt", bytes.Repeat([]byte{7}, 32))
	if err != nil {
		f.Fatal(err)
	}
	cp := &Checkpoint{Origin: signer.Name(), Size: 3, LogRoot: [HashSize]byte{1}, MapRoot: [HashSize]byte{2}}
	signed, err := SignCheckpoint(cp, signer)
	if err != nil {
		f.Fatal(err)
	}
	cosigned, err := w.Cosign(signed, time.Unix(1_800_000_000, 0))
	if err != nil {
		f.Fatal(err)
	}
	policy, err := NewWitnessPolicy(1, w.Key().String())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(cosigned)
	f.Add(signed)
	f.Add(append(bytes.Clone(cosigned), cosigned[bytes.LastIndex(cosigned, []byte("— ")):]...))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = MergeCosignatures(b, cosigned)
		_, _, _ = MergeCosignatures(cosigned, b)
		_, _ = CheckpointText(b)
		if _, err := policy.Check(b, time.Unix(1_800_000_000, 0)); err == nil {
			text, err := CheckpointText(b)
			if err != nil || text != cp.Text() {
				t.Fatalf("the policy accepted a body the witness never cosigned:\n%q", b)
			}
		}
	})
}
