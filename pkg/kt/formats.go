package kt

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"

	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// HashSize is the size of every hash in the log and the map: SHA-256.
const HashSize = sha256.Size

// Version is the version of LogLeaf and MapValue this package reads and writes.
const Version = 1

// MaxLeafSize bounds a LogLeaf's encoding: every field at its largest is about 120
// bytes.
const MaxLeafSize = 256

// mapKeyLabel is LABEL("umbra/v1/kt-map-key"): the label and one 0x00 byte.
const mapKeyLabel = "umbra/v1/kt-map-key\x00"

// MapKey is the map position of identity of app:
// SHA-256(LABEL("umbra/v1/kt-map-key") ‖ str(app) ‖ str(identity)).
func MapKey(app, identity string) [HashSize]byte {
	b := make([]byte, 0, len(mapKeyLabel)+4+len(app)+len(identity))
	b = append(b, mapKeyLabel...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(app)))
	b = append(b, app...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(identity)))
	b = append(b, identity...)
	return sha256.Sum256(b)
}

// LeafHash is the RFC 9162 hash of a log entry: SHA-256(0x00 ‖ leaf).
func LeafHash(leaf []byte) []byte {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(leaf)
	return h.Sum(nil)
}

// ValueHash is the hash of a map value's exact bytes: SHA-256(value).
func ValueHash(value []byte) [HashSize]byte { return sha256.Sum256(value) }

// canonical encodes m deterministically.
func canonical(m proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("kt: encode %T: %v", m, err)) // only a broken message fails
	}
	return b
}

// parseCanonical parses b into m and refuses what is not m's canonical encoding.
func parseCanonical(what string, b []byte, m proto.Message) error {
	if err := proto.Unmarshal(b, m); err != nil {
		return malformedf("%s: %v", what, err)
	}
	if len(m.ProtoReflect().GetUnknown()) > 0 {
		return malformedf("%s: unknown fields", what)
	}
	if !bytes.Equal(canonical(m), b) {
		return malformedf("%s: not canonically encoded", what)
	}
	return nil
}

// encodeChecked returns m's canonical bytes, after checking it with check.
func encodeChecked[M proto.Message](m M, check func(M) error) ([]byte, error) {
	if err := check(m); err != nil {
		return nil, err
	}
	return canonical(m), nil
}

// parseChecked parses b, at most MaxLeafSize bytes of a what, into m, refusing what is
// not its canonical encoding, and checks it with check.
func parseChecked[M proto.Message](what string, b []byte, m M, check func(M) error) (M, error) {
	var none M
	if len(b) > MaxLeafSize {
		return none, malformedf("%s of %d bytes, at most %d", what, len(b), MaxLeafSize)
	}
	if err := parseCanonical(what, b, m); err != nil {
		return none, err
	}
	if err := check(m); err != nil {
		return none, err
	}
	return m, nil
}

// EncodeLeaf returns a leaf's canonical bytes, after checking it as ParseLeaf would.
func EncodeLeaf(l *ktv1.LogLeaf) ([]byte, error) { return encodeChecked(l, checkLeaf) }

// ParseLeaf parses and checks a log entry's exact bytes.
func ParseLeaf(b []byte) (*ktv1.LogLeaf, error) {
	return parseChecked("log leaf", b, &ktv1.LogLeaf{}, checkLeaf)
}

func checkLeaf(l *ktv1.LogLeaf) error {
	switch {
	case l.GetVersion() != Version:
		return malformedf("log leaf version %d, want %d", l.GetVersion(), Version)
	case len(l.GetMapKey()) != HashSize:
		return malformedf("log leaf map_key of %d bytes, want %d", len(l.GetMapKey()), HashSize)
	case len(l.GetCardId()) != HashSize:
		return malformedf("log leaf card_id of %d bytes, want %d", len(l.GetCardId()), HashSize)
	case l.GetOccurredAtUnixNanos() <= 0:
		return malformedf("log leaf occurred_at_unix_nanos %d, want > 0", l.GetOccurredAtUnixNanos())
	}
	switch l.GetKind() {
	case ktv1.LogEventKind_LOG_EVENT_KIND_ENDORSED_ROTATION:
		if len(l.GetPreviousCardId()) != HashSize {
			return malformedf("endorsed rotation leaf previous_card_id of %d bytes, want %d", len(l.GetPreviousCardId()), HashSize)
		}
	case ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, ktv1.LogEventKind_LOG_EVENT_KIND_RESET, ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION:
		if len(l.GetPreviousCardId()) != 0 {
			return malformedf("%s leaf with a previous_card_id: only an endorsed rotation names one", l.GetKind())
		}
	default:
		return malformedf("log leaf kind %d is not a known event", l.GetKind())
	}
	return nil
}

// EncodeMapValue returns a map value's canonical bytes, after checking it as
// ParseMapValue would.
func EncodeMapValue(v *ktv1.MapValue) ([]byte, error) { return encodeChecked(v, checkMapValue) }

// ParseMapValue parses and checks a map value's exact bytes.
func ParseMapValue(b []byte) (*ktv1.MapValue, error) {
	return parseChecked("map value", b, &ktv1.MapValue{}, checkMapValue)
}

func checkMapValue(v *ktv1.MapValue) error {
	switch {
	case v.GetVersion() != Version:
		return malformedf("map value version %d, want %d", v.GetVersion(), Version)
	case len(v.GetCardId()) != 0 && len(v.GetCardId()) != HashSize:
		return malformedf("map value card_id of %d bytes, want %d or none", len(v.GetCardId()), HashSize)
	case len(v.GetCardId()) == 0 && v.GetCardLogIndex() != 0:
		return malformedf("map value without a card has card_log_index %d, want none", v.GetCardLogIndex())
	case v.GetCardLogIndex() > v.GetLatestLogIndex():
		return malformedf("map value card_log_index %d after latest_log_index %d", v.GetCardLogIndex(), v.GetLatestLogIndex())
	}
	return nil
}

// NextMapValue is the map rule: the value of an identity's entry after the event leaf
// at log index, given its value before (nil if the map has no entry for it). A
// publication, rotation or reset makes its card current; a revocation of the current
// card leaves none; a revocation of another card changes only latest_log_index.
func NextMapValue(prev *ktv1.MapValue, leaf *ktv1.LogLeaf, index uint64) *ktv1.MapValue {
	next := &ktv1.MapValue{Version: Version, LatestLogIndex: index}
	if leaf.GetKind() != ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION {
		next.CardId, next.CardLogIndex = leaf.GetCardId(), index
		return next
	}
	if prev != nil && !bytes.Equal(prev.GetCardId(), leaf.GetCardId()) {
		next.CardId, next.CardLogIndex = prev.GetCardId(), prev.GetCardLogIndex()
	}
	return next
}
