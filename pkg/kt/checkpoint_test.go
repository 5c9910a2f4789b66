package kt

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func testSigner(t testing.TB, origin string, seedByte byte) *LogSigner {
	t.Helper()
	s, err := NewLogSigner(origin, bytesOf(seedByte, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// appendSigned appends leaves to m's log and returns the checkpoint after them, and
// that checkpoint signed by signer.
func appendSigned(t *testing.T, m *Memory, signer *LogSigner, leaves ...[]byte) (*Checkpoint, []byte) {
	t.Helper()
	cp, err := m.Append(signer.Name(), leaves...)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := SignCheckpoint(cp, signer)
	if err != nil {
		t.Fatal(err)
	}
	return cp, signed
}

// TestLogSignerIsASignedNoteKey: the verifier key string is the signed-note format,
// and x/mod's own verifier accepts what the signer signed.
func TestLogSignerIsASignedNoteKey(t *testing.T) {
	s := testSigner(t, "umbra.example/kt", 7)
	v, err := note.NewVerifier(s.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	if v.Name() != s.Name() || v.KeyHash() != s.KeyHash() {
		t.Fatalf("verifier %s %08x, signer %s %08x", v.Name(), v.KeyHash(), s.Name(), s.KeyHash())
	}
	msg, err := SignCheckpoint(&Checkpoint{Origin: s.Name(), Size: 3}, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		t.Fatal(err)
	}
	if _, err := NewLogSigner("with space", bytesOf(1, 32)); err == nil {
		t.Error("a key name with a space was accepted")
	}
}

// TestOpenCheckpointRefusesWhatIsNotSignedByTheLogKey: tampered text, a signature by
// another key (under the log's name too), no known key, and malformed bodies are each
// refused with their kind; a cosignature beside the log's is ignored.
func TestOpenCheckpointRefusesWhatIsNotSignedByTheLogKey(t *testing.T) {
	logKey := testSigner(t, "umbra.example/kt", 1)
	impostor := testSigner(t, "umbra.example/kt", 2)
	witness := testSigner(t, "witness.example", 3)
	cp := &Checkpoint{Origin: logKey.Name(), Size: 42, LogRoot: [HashSize]byte(bytesOf(0xaa, 32)), MapRoot: [HashSize]byte(bytesOf(0xbb, 32))}
	signed, err := SignCheckpoint(cp, logKey)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenCheckpoint(signed, logKey.VerifierKey())
	if err != nil || *got != *cp {
		t.Fatalf("open: %+v, %v", got, err)
	}
	cosigned, err := note.Sign(&note.Note{Text: cp.Text()}, logKey, witness)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCheckpoint(cosigned, logKey.VerifierKey()); err != nil {
		t.Fatalf("a checkpoint with a witness's cosignature beside the log's: %v", err)
	}
	byImpostor, _ := SignCheckpoint(cp, impostor)
	// The log's checkpoint signed by a witness alone.
	byWitness, _ := note.Sign(&note.Note{Text: cp.Text()}, witness)
	tampered := bytes.Replace(signed, []byte("\n42\n"), []byte("\n43\n"), 1)
	// The log key's signature line over a checkpoint of another size.
	other, _ := SignCheckpoint(&Checkpoint{Origin: logKey.Name(), Size: 43}, logKey)
	spliced := append([]byte(cp.Text()+"\n"), other[len((&Checkpoint{Origin: logKey.Name(), Size: 43}).Text())+1:]...)
	checkOpenCheckpoint(t, cp, []openCase{
		{"the size changed", tampered, []string{logKey.VerifierKey()}, ErrBadSignature},
		{"another checkpoint's signature", spliced, []string{logKey.VerifierKey()}, ErrBadSignature},
		{"signed by another key of the log's name", byImpostor, []string{logKey.VerifierKey()}, ErrUnknownLogKey},
		{"signed only by a known key of another name", byWitness, []string{logKey.VerifierKey(), witness.VerifierKey()}, ErrUnknownLogKey},
		{"no log key known", signed, nil, ErrUnknownLogKey},
		{"not a note", []byte("umbra.example/kt\n42\n"), []string{logKey.VerifierKey()}, ErrMalformed},
		{"too large", bytes.Repeat([]byte("a"), MaxCheckpointSize+1), []string{logKey.VerifierKey()}, ErrMalformed},
	})
}

// openCase is a signed note given to OpenCheckpoint with the verifier keys known, and
// the kind of error it must fail with, or nil when it must open to the checkpoint.
type openCase struct {
	name   string
	signed []byte
	keys   []string
	want   error
}

// checkOpenCheckpoint opens each case's note, in a subtest of its name.
func checkOpenCheckpoint(t *testing.T, cp *Checkpoint, cases []openCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := OpenCheckpoint(tc.signed, tc.keys...)
			if !errors.Is(err, tc.want) || (err == nil && *got != *cp) {
				t.Fatalf("got %+v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestParseCheckpointRefusesMalformedBodies(t *testing.T) {
	good := (&Checkpoint{Origin: "o", Size: 1}).Text()
	if _, err := ParseCheckpoint(good); err != nil {
		t.Fatal(err)
	}
	root := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	for name, text := range map[string]string{
		"no map line":       "o\n1\n" + root + "\n",
		"an extra line":     good + "x\n",
		"no final newline":  strings.TrimSuffix(good, "\n"),
		"a leading zero":    "o\n01\n" + root + "\numbra-map " + root + "\n",
		"a negative size":   "o\n-1\n" + root + "\numbra-map " + root + "\n",
		"a short root":      "o\n1\nAAAA\numbra-map " + root + "\n",
		"unpadded base64":   "o\n1\n" + strings.TrimSuffix(root, "=") + "\numbra-map " + root + "\n",
		"another extension": "o\n1\n" + root + "\nother " + root + "\n",
		"an empty origin":   "\n1\n" + root + "\numbra-map " + root + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseCheckpoint(text); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

// TestCheckpointSignedDuringALogKeyRotation: a checkpoint signed by the old and the
// new log key (same origin, different key hashes) opens with either key or both; one
// signed by the new key alone is refused by a verifier that knows only the old one;
// a known key's signature that does not verify is refused even beside a good one.
func TestCheckpointSignedDuringALogKeyRotation(t *testing.T) {
	oldKey := testSigner(t, "umbra.example/kt", 1)
	newKey := testSigner(t, "umbra.example/kt", 2)
	if oldKey.KeyHash() == newKey.KeyHash() {
		t.Fatal("test keys share a key hash")
	}
	cp := &Checkpoint{Origin: oldKey.Name(), Size: 7, LogRoot: [HashSize]byte(bytesOf(0xaa, 32)), MapRoot: [HashSize]byte(bytesOf(0xbb, 32))}
	both, err := SignCheckpoint(cp, oldKey, newKey)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(both, []byte("\u2014 umbra.example/kt ")); n != 2 {
		t.Fatalf("%d signature lines of the log's name, want 2:\n%s", n, both)
	}
	newOnly, err := SignCheckpoint(cp, newKey)
	if err != nil {
		t.Fatal(err)
	}
	// The new key's signature line replaced by another checkpoint's: it no longer verifies.
	otherSigned, _ := SignCheckpoint(&Checkpoint{Origin: oldKey.Name(), Size: 8}, oldKey, newKey)
	badNew := append(bytes.Clone(both[:bytes.LastIndex(both, []byte("\u2014"))]), otherSigned[bytes.LastIndex(otherSigned, []byte("\u2014")):]...)
	checkOpenCheckpoint(t, cp, []openCase{
		{"both signatures, the old key known", both, []string{oldKey.VerifierKey()}, nil},
		{"both signatures, the new key known", both, []string{newKey.VerifierKey()}, nil},
		{"both signatures, both keys known", both, []string{oldKey.VerifierKey(), newKey.VerifierKey()}, nil},
		{"both signatures, a key given twice", both, []string{newKey.VerifierKey(), oldKey.VerifierKey(), newKey.VerifierKey()}, nil},
		{"the new key's alone, the old key known", newOnly, []string{oldKey.VerifierKey()}, ErrUnknownLogKey},
		{"the new key's alone, both known", newOnly, []string{oldKey.VerifierKey(), newKey.VerifierKey()}, nil},
		{"a bad signature by the new key, the old key known", badNew, []string{oldKey.VerifierKey()}, nil},
		{"a bad signature by the new key, both known", badNew, []string{oldKey.VerifierKey(), newKey.VerifierKey()}, ErrBadSignature},
	})
	if _, err := SignCheckpoint(cp, oldKey, oldKey); err == nil {
		t.Error("a checkpoint signed twice by one key was made")
	}
	if _, err := SignCheckpoint(cp, oldKey, testSigner(t, "other.example/kt", 3)); err == nil {
		t.Error("a checkpoint signed by a key of another name was made")
	}
	if _, err := SignCheckpoint(cp); err == nil {
		t.Error("a checkpoint signed by no key was made")
	}
}
