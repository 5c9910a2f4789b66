package kt

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// TestParseRefusesWhatIsNotCanonical checks ParseLeaf and ParseMapValue, which read
// what the log and the map commit to: each takes back exactly what its Encode wrote,
// and refuses, as ErrMalformed, bytes over MaxLeafSize, unknown fields, a second
// encoding of the same message, and a message its checks refuse.
func TestParseRefusesWhatIsNotCanonical(t *testing.T) {
	t.Parallel()
	leaf, err := EncodeLeaf(&ktv1.LogLeaf{Version: Version, MapKey: bytesOf(1, HashSize), Kind: ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, CardId: bytesOf(2, HashSize), OccurredAtUnixNanos: 1})
	if err != nil {
		t.Fatal(err)
	}
	value, err := EncodeMapValue(&ktv1.MapValue{Version: Version, CardId: bytesOf(3, HashSize), CardLogIndex: 1, LatestLogIndex: 2})
	if err != nil {
		t.Fatal(err)
	}
	unknown := func(b []byte) []byte {
		return protowire.AppendVarint(protowire.AppendTag(bytes.Clone(b), 99, protowire.VarintType), 1)
	}
	// The version field written twice: the same message, not its canonical bytes.
	twice := func(b []byte) []byte {
		return protowire.AppendVarint(protowire.AppendTag(bytes.Clone(b), 1, protowire.VarintType), Version)
	}
	oversized := func(b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(bytes.Clone(b), 99, protowire.BytesType), make([]byte, MaxLeafSize))
	}
	parsers := []struct {
		what  string
		valid []byte
		parse func([]byte) error
		wrong []byte // a message its checks refuse
	}{
		{"log leaf", leaf, func(b []byte) error { _, err := ParseLeaf(b); return err }, canonical(&ktv1.LogLeaf{Version: Version + 1})},
		{"map value", value, func(b []byte) error { _, err := ParseMapValue(b); return err }, canonical(&ktv1.MapValue{Version: Version + 1})},
	}
	for _, p := range parsers {
		t.Run(p.what, func(t *testing.T) {
			if err := p.parse(p.valid); err != nil {
				t.Fatalf("the encoded %s does not parse back: %v", p.what, err)
			}
			for _, tc := range []struct {
				name, want string
				b          []byte
			}{
				{"over MaxLeafSize", "at most 256", oversized(p.valid)},
				{"unknown field", "unknown fields", unknown(p.valid)},
				{"not canonical", "not canonically encoded", twice(p.valid)},
				{"refused by its checks", "version 2", p.wrong},
			} {
				err := p.parse(tc.b)
				if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), p.what) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: %v; want ErrMalformed about the %s, saying %q", tc.name, err, p.what, tc.want)
				}
			}
		})
	}
}
