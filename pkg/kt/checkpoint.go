package kt

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// A checkpoint is the C2SP tlog-checkpoint of the log, with one extension line that
// commits to the map at the same moment, signed as a C2SP signed note by the log key:
//
//	<origin>
//	<log size, decimal>
//	<log root, base64>
//	umbra-map <map root, base64>
//
// followed by a blank line and the signature lines. The log key's name is the origin.

// MapExtension starts the checkpoint's map root line.
const MapExtension = "umbra-map "

// MaxCheckpointSize bounds a signed checkpoint: the body is under 200 bytes, and each
// signature line (the log key's, a witness's cosignature) under 200 more.
const MaxCheckpointSize = 16 << 10

// Checkpoint is a checkpoint's body: what the log key signs.
type Checkpoint struct {
	// Origin names the log, and is the name of the log key.
	Origin string
	// Size is the number of log entries, and LogRoot the root of the tree of them.
	Size    uint64
	LogRoot [HashSize]byte
	// MapRoot is the root of the map after the first Size entries.
	MapRoot [HashSize]byte
}

// Text is the checkpoint's body as a note's text.
func (c *Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%d\n%s\n%s%s\n", c.Origin, c.Size,
		base64.StdEncoding.EncodeToString(c.LogRoot[:]), MapExtension, base64.StdEncoding.EncodeToString(c.MapRoot[:]))
}

// ParseCheckpoint parses a checkpoint's body (a note's text).
func ParseCheckpoint(text string) (*Checkpoint, error) {
	lines := strings.SplitAfter(text, "\n")
	if len(lines) != 5 || lines[4] != "" {
		return nil, malformedf("checkpoint body of %d lines, want 4, each ending in a newline", len(lines)-1)
	}
	for i := range lines[:4] {
		lines[i] = strings.TrimSuffix(lines[i], "\n")
	}
	c := &Checkpoint{Origin: lines[0]}
	if c.Origin == "" {
		return nil, malformedf("checkpoint origin line is empty")
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] {
		return nil, malformedf("checkpoint size %q is not a decimal number without leading zeros", lines[1])
	}
	c.Size = size
	if err := decodeHash(lines[2], &c.LogRoot); err != nil {
		return nil, malformedf("checkpoint log root: %v", err)
	}
	mapRoot, ok := strings.CutPrefix(lines[3], MapExtension)
	if !ok {
		return nil, malformedf("checkpoint fourth line %q does not start with %q", lines[3], MapExtension)
	}
	if err := decodeHash(mapRoot, &c.MapRoot); err != nil {
		return nil, malformedf("checkpoint map root: %v", err)
	}
	return c, nil
}

func decodeHash(s string, out *[HashSize]byte) error {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != HashSize || base64.StdEncoding.EncodeToString(b) != s {
		return fmt.Errorf("%q is not the standard base64 of %d bytes", s, HashSize)
	}
	*out = [HashSize]byte(b)
	return nil
}

// LogSigner signs checkpoints with a log key: an Ed25519 key named by the log's
// origin. It is a note.Signer.
type LogSigner struct {
	name string
	hash uint32
	key  ed25519.PrivateKey
}

var _ note.Signer = (*LogSigner)(nil)

// algEd25519 is the signed-note algorithm byte of Ed25519 keys.
const algEd25519 = 1

// NewLogSigner returns the signer of the log key with this Ed25519 seed, named origin.
func NewLogSigner(origin string, seed []byte) (*LogSigner, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("kt: log key seed of %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	if !validKeyName(origin) {
		return nil, fmt.Errorf("kt: log origin %q is not a valid key name: non-empty UTF-8 without spaces, newlines or '+'", origin)
	}
	key := ed25519.NewKeyFromSeed(seed)
	return &LogSigner{name: origin, hash: keyHash(origin, key.Public().(ed25519.PublicKey)), key: key}, nil
}

// validKeyName is the signed-note rule for key names.
func validKeyName(name string) bool {
	return name != "" && !strings.ContainsAny(name, " \t\n+") && strings.ToValidUTF8(name, "\uFFFD") == name
}

// keyHash is the signed note key hash: the first 4 bytes of
// SHA-256(name ‖ 0x0a ‖ 0x01 ‖ public key), big-endian.
func keyHash(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', algEd25519})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

func (s *LogSigner) Name() string                    { return s.name }
func (s *LogSigner) KeyHash() uint32                 { return s.hash }
func (s *LogSigner) Sign(msg []byte) ([]byte, error) { return ed25519.Sign(s.key, msg), nil }

// PublicKey is the log key's public half.
func (s *LogSigner) PublicKey() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// VerifierKey is the log key as a signed-note verifier key string
// ("<origin>+<key hash, 8 hex digits>+<base64 of 0x01 ‖ public key>"), what clients,
// witnesses and auditors are configured with.
func (s *LogSigner) VerifierKey() string {
	vkey, err := note.NewEd25519VerifierKey(s.name, s.PublicKey())
	if err != nil {
		panic(fmt.Sprintf("kt: verifier key of a valid signer: %v", err)) // names are checked in NewLogSigner
	}
	return vkey
}

// SignCheckpoint returns the signed note of c, signed by each of signers in turn: one
// log key, or, while the log key is being rotated, the old and the new one (both named
// by the origin, with different key hashes). A verifier that knows either accepts the
// note, since signed-note verifiers ignore signatures by keys they do not know.
func SignCheckpoint(c *Checkpoint, signers ...*LogSigner) ([]byte, error) {
	if len(signers) == 0 {
		return nil, errors.New("kt: a checkpoint signed by no log key")
	}
	ns := make([]note.Signer, len(signers))
	for i, s := range signers {
		if c.Origin != s.Name() {
			return nil, fmt.Errorf("kt: checkpoint of origin %q, but the log key is named %q", c.Origin, s.Name())
		}
		for _, o := range signers[:i] {
			if o.KeyHash() == s.KeyHash() {
				return nil, fmt.Errorf("kt: two log keys of origin %q with the key hash %08x", c.Origin, s.KeyHash())
			}
		}
		ns[i] = s
	}
	return note.Sign(&note.Note{Text: c.Text()}, ns...)
}

// OpenCheckpoint verifies a signed checkpoint against the log keys a client knows
// (verifier key strings) and returns its body. The checkpoint must carry a valid
// signature by a known key named by its origin; any of them will do, so that a client
// that knows the old or the new key of a log key rotation (or both) accepts the
// checkpoints signed during it. Other signatures (a witness's cosignature, a log key
// the client does not know) are ignored here; a known key's signature that does not
// verify is refused.
func OpenCheckpoint(signed []byte, logKeys ...string) (*Checkpoint, error) {
	if len(signed) > MaxCheckpointSize {
		return nil, malformedf("signed checkpoint of %d bytes, at most %d", len(signed), MaxCheckpointSize)
	}
	verifiers := make([]note.Verifier, 0, len(logKeys))
	for i, k := range logKeys {
		if slices.Contains(logKeys[:i], k) {
			continue // the same key twice (configured and pinned, say) is one key
		}
		v, err := note.NewVerifier(k)
		if err != nil {
			return nil, fmt.Errorf("kt: log key %q: %w", k, err)
		}
		verifiers = append(verifiers, v)
	}
	n, err := note.Open(signed, note.VerifierList(verifiers...))
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified):
		return nil, fmt.Errorf("%w: the checkpoint is signed by none of the %d known log keys", ErrUnknownLogKey, len(logKeys))
	case errors.As(err, &invalid):
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	case err != nil:
		return nil, malformedf("signed checkpoint: %v", err)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return nil, err
	}
	for _, s := range n.Sigs {
		if s.Name == c.Origin {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: the checkpoint of origin %q is not signed by a known key of that name", ErrUnknownLogKey, c.Origin)
}
