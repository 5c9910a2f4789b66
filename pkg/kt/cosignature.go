package kt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Witnesses cosign checkpoints: a cosignature is a C2SP tlog-cosignature/v1 (Ed25519)
// signature line appended to the signed checkpoint, by which a witness states that, at
// the time it carries, this checkpoint was the largest one it had seen of the log and
// was consistent with every earlier one it had seen (docs/wire-format.md 13.8).
//
//	— <witness name> base64(key ID (4 bytes) ‖ timestamp (8 bytes, big-endian) ‖ Ed25519 signature (64 bytes))
//
// The key ID is the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key); the
// signature is over
//
//	cosignature/v1\n
//	time <timestamp, decimal>\n
//	<the checkpoint's whole body, with its final newline>
//
// A client requires cosignatures with a WitnessPolicy: at least k of the witnesses it
// names.

// algCosignatureV1 is the signed-note algorithm byte of C2SP tlog-cosignature/v1
// Ed25519 keys.
const algCosignatureV1 = 0x04

// cosignatureHeader starts every message a witness signs.
const cosignatureHeader = "cosignature/v1\n"

// cosignatureSize is a cosignature's bytes after its key ID: timestamp and signature.
const cosignatureSize = 8 + ed25519.SignatureSize

// MaxCosignatureSkew is how far in the future a cosignature's time may be, by the
// verifier's clock, and still count: the clock skew tolerated elsewhere
// (docs/wire-format.md 6.3). A cosignature from further ahead is refused, as C2SP
// allows: it would let a witness's statement about the log outlive its moment.
const MaxCosignatureSkew = 5 * time.Minute

// WitnessKey is a witness's public key: the name it signs as and its Ed25519 key.
type WitnessKey struct {
	name string
	hash uint32
	pub  ed25519.PublicKey
}

// NewWitnessKey returns the witness key of name and pub.
func NewWitnessKey(name string, pub ed25519.PublicKey) (*WitnessKey, error) {
	if !validKeyName(name) {
		return nil, malformedf("witness name %q is not a valid key name: non-empty UTF-8 without spaces, newlines or '+'", name)
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, malformedf("witness public key of %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	pub = bytes.Clone(pub)
	return &WitnessKey{name: name, hash: cosignerKeyHash(name, pub), pub: pub}, nil
}

// ParseWitnessKey parses a witness's verifier key,
// "<name>+<key ID, 8 hex digits>+<base64 of 0x04 ‖ Ed25519 public key>" (the C2SP
// signed-note verifier key with the cosignature/v1 algorithm byte).
func ParseWitnessKey(vkey string) (*WitnessKey, error) {
	name, rest, ok1 := strings.Cut(vkey, "+")
	hash16, key64, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 {
		return nil, malformedf("witness key %q is not <name>+<key ID>+<key>", vkey)
	}
	hash, err := strconv.ParseUint(hash16, 16, 32)
	if err != nil || len(hash16) != 8 {
		return nil, malformedf("witness key %q: key ID %q is not 8 hex digits", vkey, hash16)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(key64)
	if err != nil || len(key) != 1+ed25519.PublicKeySize {
		return nil, malformedf("witness key %q: the key is not the base64 of %d bytes", vkey, 1+ed25519.PublicKeySize)
	}
	if key[0] != algCosignatureV1 {
		return nil, malformedf("witness key %q: algorithm 0x%02x, want 0x%02x (cosignature/v1 Ed25519); a log key (0x01) is not a witness key", vkey, key[0], algCosignatureV1)
	}
	k, err := NewWitnessKey(name, key[1:])
	if err != nil {
		return nil, err
	}
	if uint32(hash) != k.hash {
		return nil, malformedf("witness key %q: key ID %08x, but name and key give %08x", vkey, hash, k.hash)
	}
	return k, nil
}

// Name is the name the witness signs as.
func (k *WitnessKey) Name() string { return k.name }

// KeyHash is the key ID of its signature lines.
func (k *WitnessKey) KeyHash() uint32 { return k.hash }

// PublicKey is its Ed25519 public key.
func (k *WitnessKey) PublicKey() ed25519.PublicKey { return bytes.Clone(k.pub) }

// String is the verifier key string ParseWitnessKey reads.
func (k *WitnessKey) String() string {
	return fmt.Sprintf("%s+%08x+%s", k.name, k.hash, base64.StdEncoding.EncodeToString(append([]byte{algCosignatureV1}, k.pub...)))
}

// cosignerKeyHash is SHA-256(name ‖ "\n" ‖ 0x04 ‖ pub)[:4], big-endian.
func cosignerKeyHash(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', algCosignatureV1})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// CosignedMessage is what a witness signs for a checkpoint body text at a time: the
// header line, the time line, and the body.
func CosignedMessage(text string, timestamp uint64) []byte {
	return fmt.Appendf(nil, "%stime %d\n%s", cosignatureHeader, timestamp, text)
}

// cosignatureVerifier is a note.Verifier of one witness's cosignatures. It remembers
// the time of the last one it accepted.
type cosignatureVerifier struct {
	key  *WitnessKey
	time uint64
}

func (v *cosignatureVerifier) Name() string    { return v.key.name }
func (v *cosignatureVerifier) KeyHash() uint32 { return v.key.hash }

func (v *cosignatureVerifier) Verify(text, sig []byte) bool {
	if len(sig) != cosignatureSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig)
	if ts > math.MaxInt64 {
		return false
	}
	if !ed25519.Verify(v.key.pub, CosignedMessage(string(text), ts), sig[8:]) {
		return false
	}
	v.time = ts
	return true
}

// VerifyCosignature checks witness's cosignature on signed (a signed checkpoint) and
// returns its time. A note without a signature line of the witness is
// ErrNotWitnessed; one whose line does not verify, or that is not a checkpoint,
// ErrBadCosignature (ErrMalformed for a note that does not parse). It does not check
// the log's signature: OpenCheckpoint does.
func VerifyCosignature(signed []byte, witness *WitnessKey) (time.Time, error) {
	if len(signed) > MaxCheckpointSize {
		return time.Time{}, malformedf("signed checkpoint of %d bytes, at most %d", len(signed), MaxCheckpointSize)
	}
	v := &cosignatureVerifier{key: witness}
	n, err := note.Open(signed, note.VerifierList(v))
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified):
		return time.Time{}, fmt.Errorf("%w: no cosignature by witness %s", ErrNotWitnessed, witness.name)
	case errors.As(err, &invalid):
		return time.Time{}, fmt.Errorf("%w: the cosignature of witness %s does not verify", ErrBadCosignature, witness.name)
	case err != nil:
		return time.Time{}, malformedf("signed checkpoint: %v", err)
	}
	if _, err := ParseCheckpoint(n.Text); err != nil {
		return time.Time{}, fmt.Errorf("%w: witness %s cosigned a note that is not a checkpoint: %v", ErrBadCosignature, witness.name, err)
	}
	return time.Unix(int64(v.time), 0).UTC(), nil
}

// WitnessSigner cosigns checkpoints as one witness.
type WitnessSigner struct {
	key  *WitnessKey
	priv ed25519.PrivateKey
}

// NewWitnessSigner returns the signer of the witness key with this Ed25519 seed,
// named name.
func NewWitnessSigner(name string, seed []byte) (*WitnessSigner, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("kt: witness key seed of %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	key, err := NewWitnessKey(name, priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	return &WitnessSigner{key: key, priv: priv}, nil
}

// witnessSignerPrefix starts a witness's private key string.
const witnessSignerPrefix = "PRIVATE+KEY+"

// GenerateWitnessSigner returns a new witness key named name, from rand.
func GenerateWitnessSigner(name string, rand io.Reader) (*WitnessSigner, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return nil, err
	}
	return NewWitnessSigner(name, seed)
}

// ParseWitnessSigner parses a witness's private key string (String's form):
// "PRIVATE+KEY+<name>+<key ID, 8 hex digits>+<base64 of 0x04 ‖ Ed25519 seed>", the
// signed-note private key form with the cosignature/v1 algorithm byte.
func ParseWitnessSigner(skey string) (*WitnessSigner, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(skey), witnessSignerPrefix)
	if !ok {
		return nil, errors.New("kt: a witness private key starts with " + witnessSignerPrefix)
	}
	name, rest, ok1 := strings.Cut(rest, "+")
	hash16, key64, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 {
		return nil, errors.New("kt: witness private key is not PRIVATE+KEY+<name>+<key ID>+<key>")
	}
	key, err := base64.StdEncoding.Strict().DecodeString(key64)
	if err != nil || len(key) != 1+ed25519.SeedSize || key[0] != algCosignatureV1 {
		return nil, fmt.Errorf("kt: witness private key: the key is not the base64 of 0x%02x and a %d-byte seed", algCosignatureV1, ed25519.SeedSize)
	}
	s, err := NewWitnessSigner(name, key[1:])
	if err != nil {
		return nil, err
	}
	if hash16 != fmt.Sprintf("%08x", s.key.hash) {
		return nil, fmt.Errorf("kt: witness private key: key ID %q does not match its name and key", hash16)
	}
	return s, nil
}

// String is the private key string ParseWitnessSigner reads. It is secret.
func (s *WitnessSigner) String() string {
	return fmt.Sprintf("%s%s+%08x+%s", witnessSignerPrefix, s.key.name, s.key.hash,
		base64.StdEncoding.EncodeToString(append([]byte{algCosignatureV1}, s.priv.Seed()...)))
}

// Key is the witness's public key.
func (s *WitnessSigner) Key() *WitnessKey { return s.key }

// timedSigner is a note.Signer of cosignatures at one time.
type timedSigner struct {
	s  *WitnessSigner
	ts uint64
}

func (t timedSigner) Name() string    { return t.s.key.name }
func (t timedSigner) KeyHash() uint32 { return t.s.key.hash }

func (t timedSigner) Sign(text []byte) ([]byte, error) {
	sig := binary.BigEndian.AppendUint64(make([]byte, 0, cosignatureSize), t.ts)
	return append(sig, ed25519.Sign(t.s.priv, CosignedMessage(string(text), t.ts))...), nil
}

// Cosign returns signed (a signed checkpoint) with this witness's cosignature at time
// at appended after its signature lines (replacing an earlier cosignature of the same
// key). It checks that the note is a checkpoint, not who signed it: the witness
// verifies the log's signature and the checkpoint's consistency first.
func (s *WitnessSigner) Cosign(signed []byte, at time.Time) ([]byte, error) {
	if at.Unix() < 0 {
		return nil, fmt.Errorf("kt: cosignature time %s is before 1970", at)
	}
	var unverified *note.UnverifiedNoteError
	_, err := note.Open(signed, note.VerifierList())
	if !errors.As(err, &unverified) {
		return nil, malformedf("signed checkpoint: %v", err)
	}
	n := unverified.Note
	if _, err := ParseCheckpoint(n.Text); err != nil {
		return nil, err
	}
	return note.Sign(&note.Note{Text: n.Text, UnverifiedSigs: n.UnverifiedSigs}, timedSigner{s, uint64(at.Unix())})
}

// Cosignature is a verified cosignature: by whom, and when it was made.
type Cosignature struct {
	Witness *WitnessKey
	Time    time.Time
}

// WitnessPolicy is a client's rule for checkpoints: it accepts one only with valid
// cosignatures from at least Quorum of the witnesses it names.
type WitnessPolicy struct {
	quorum    int
	witnesses []*WitnessKey
}

// NewWitnessPolicy returns the policy "at least quorum of these witnesses"
// (verifier key strings). The quorum must be from 1 to the number of witnesses, and
// no public key may be named twice: a cosignature/v1 signature does not cover the
// witness's name, so one key under two names would count one signature twice.
func NewWitnessPolicy(quorum int, witnessKeys ...string) (*WitnessPolicy, error) {
	if quorum < 1 || quorum > len(witnessKeys) {
		return nil, fmt.Errorf("kt: witness quorum %d of %d witnesses: want 1 to %d", quorum, len(witnessKeys), len(witnessKeys))
	}
	p := &WitnessPolicy{quorum: quorum}
	seen := map[string]string{}
	for _, vkey := range witnessKeys {
		k, err := ParseWitnessKey(vkey)
		if err != nil {
			return nil, err
		}
		if other, dup := seen[string(k.pub)]; dup {
			return nil, fmt.Errorf("kt: witnesses %s and %s have the same public key: each witness needs its own", other, k.name)
		}
		seen[string(k.pub)] = k.name
		p.witnesses = append(p.witnesses, k)
	}
	return p, nil
}

// Quorum is how many of the witnesses must have cosigned.
func (p *WitnessPolicy) Quorum() int { return p.quorum }

// Witnesses are the policy's witnesses.
func (p *WitnessPolicy) Witnesses() []*WitnessKey { return append([]*WitnessKey(nil), p.witnesses...) }

// NotWitnessedError is a checkpoint without its quorum of valid cosignatures. It wraps
// ErrNotWitnessed.
type NotWitnessedError struct {
	Quorum int
	// Valid are the cosignatures that counted.
	Valid []Cosignature
	// Missing says, for each witness of the policy whose cosignature did not count,
	// why: absent, not verifying, or from the future.
	Missing map[string]error
}

func (e *NotWitnessedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kt: checkpoint not witnessed: %d valid cosignatures of the %d required", len(e.Valid), e.Quorum)
	for name, err := range e.Missing {
		fmt.Fprintf(&b, "; %s: %v", name, err)
	}
	return b.String()
}

func (e *NotWitnessedError) Unwrap() error { return ErrNotWitnessed }

// Check verifies the cosignatures of the policy's witnesses on signed (a signed
// checkpoint) and returns those that count, or a *NotWitnessedError when fewer than
// the quorum do. A cosignature counts if it verifies and its time is at most
// MaxCosignatureSkew after now. Signature lines of other keys are ignored. Check
// does not verify the log's signature: OpenCheckpoint does, and a client calls both.
func (p *WitnessPolicy) Check(signed []byte, now time.Time) ([]Cosignature, error) {
	if len(signed) > MaxCheckpointSize {
		return nil, malformedf("signed checkpoint of %d bytes, at most %d", len(signed), MaxCheckpointSize)
	}
	var valid []Cosignature
	missing := map[string]error{}
	for _, w := range p.witnesses {
		t, err := VerifyCosignature(signed, w)
		switch {
		case errors.Is(err, ErrMalformed):
			return nil, err
		case err != nil:
			missing[w.name] = err
		case t.After(now.Add(MaxCosignatureSkew)):
			missing[w.name] = fmt.Errorf("%w: cosigned at %s, in the future", ErrBadCosignature, t.Format(time.RFC3339))
		default:
			valid = append(valid, Cosignature{Witness: w, Time: t})
		}
	}
	if len(valid) < p.quorum {
		return nil, &NotWitnessedError{Quorum: p.quorum, Valid: valid, Missing: missing}
	}
	return valid, nil
}

// MergeCosignatures returns signed with the signature lines of each of others that it
// lacks appended, for each of others that is a note of the same body. Notes of
// another body are returned apart: a witness that answered with another checkpoint.
func MergeCosignatures(signed []byte, others ...[]byte) (merged []byte, differing [][]byte, err error) {
	base, err := openAny(signed)
	if err != nil {
		return nil, nil, err
	}
	have := map[string]bool{}
	for _, s := range base.UnverifiedSigs {
		have[s.Name+" "+s.Base64] = true
	}
	out := bytes.Clone(signed)
	for _, o := range others {
		n, err := openAny(o)
		if err != nil {
			return nil, nil, err
		}
		if n.Text != base.Text {
			differing = append(differing, o)
			continue
		}
		for _, s := range n.UnverifiedSigs {
			if line := s.Name + " " + s.Base64; !have[line] {
				have[line] = true
				out = fmt.Appendf(out, "— %s\n", line)
			}
		}
	}
	if len(out) > MaxCheckpointSize {
		return nil, nil, malformedf("cosigned checkpoint of %d bytes, at most %d", len(out), MaxCheckpointSize)
	}
	return out, differing, nil
}

// openAny parses a signed note without verifying any signature.
func openAny(signed []byte) (*note.Note, error) {
	if len(signed) > MaxCheckpointSize {
		return nil, malformedf("signed checkpoint of %d bytes, at most %d", len(signed), MaxCheckpointSize)
	}
	var unverified *note.UnverifiedNoteError
	if _, err := note.Open(signed, note.VerifierList()); !errors.As(err, &unverified) {
		return nil, malformedf("signed checkpoint: %v", err)
	}
	return unverified.Note, nil
}

// CheckpointText returns a signed checkpoint's body text, without verifying it.
func CheckpointText(signed []byte) (string, error) {
	n, err := openAny(signed)
	if err != nil {
		return "", err
	}
	return n.Text, nil
}

// ForkError is proof that a log showed two histories: two checkpoints, each signed by
// the log key, that cannot both be views of one append-only log (the same size with
// different bodies, or a consistency proof between them that fails). It wraps
// ErrInconsistent.
type ForkError struct {
	Origin string
	// Held is the checkpoint the detector held (cosigned, for a witness), and
	// Conflicting the one that contradicts it; both signed notes.
	Held, Conflicting []byte
	HeldSize          uint64
	ConflictingSize   uint64
	// Reason says how they conflict.
	Reason string
}

func (e *ForkError) Error() string {
	return fmt.Sprintf("kt: fork of log %s: the checkpoints of %d and %d entries %s", e.Origin, e.HeldSize, e.ConflictingSize, e.Reason)
}

func (e *ForkError) Unwrap() error { return ErrInconsistent }
