// Package vectortest checks the test vector files of pkg/e2ee, pkg/kt and pkg/keybackup
// the one same way: the vectors verify with only the values they state, generating them
// again gives the same bytes, and the section of docs/wire-format.md that shows them
// holds exactly these. With -update-vectors (a flag of every test binary that imports
// this package) it rewrites the file and the section first, for an intended change of
// a format; the diff is then to review.
package vectortest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update-vectors", false, "rewrite the test vector files under testdata and their sections of docs/wire-format.md")

// WireFormatDoc is the document that shows the vectors, from a package under pkg/.
const WireFormatDoc = "../../docs/wire-format.md"

// Hex is []byte written as lower-case hex in JSON.
type Hex []byte

func (h Hex) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

func (h *Hex) UnmarshalText(b []byte) error {
	v, err := hex.DecodeString(string(b))
	*h = v
	return err
}

// Counting returns n bytes start, start+1, ...: the fixed seeds, salts and nonces of
// the vectors.
func Counting(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

// WriteHex writes b to w as the documents show byte strings: lower-case hex, 32 bytes
// a line, each line after indent. It writes nothing for no bytes.
func WriteHex(w *strings.Builder, indent string, b []byte) {
	for len(b) > 0 {
		n := min(32, len(b))
		fmt.Fprintf(w, "%s%x\n", indent, b[:n])
		b = b[n:]
	}
}

// Field writes the byte string value named name as the documents show one: a line
// "name (n bytes):", then its hex two spaces in (WriteHex), or "(empty)" for none.
func Field(w *strings.Builder, name string, value []byte) {
	fmt.Fprintf(w, "%s (%d bytes):\n", name, len(value))
	if len(value) == 0 {
		w.WriteString("  (empty)\n")
	}
	WriteHex(w, "  ", value)
}

// Block writes a vector as the documents show one: a heading "#### title", then what
// body writes, fenced as code.
func Block(w *strings.Builder, title string, body func()) {
	fmt.Fprintf(w, "\n#### %s\n\n```\n", title)
	body()
	w.WriteString("```\n")
}

// Set is one file of test vectors that a section of WireFormatDoc shows.
type Set[V any] struct {
	File       string // the JSON file under testdata
	Begin, End string // the markers around the generated section of the document
	Generate   func(*testing.T) *V
	Verify     func(*testing.T, *V)
	Render     func(*V) string
	Changed    string // what a difference on regeneration would mean
}

// Check checks a vector file three ways, in the subtests verify, regenerate and
// document: its vectors verify with only the values they state; generating them again
// gives the same bytes; and the document shows them. With -update-vectors it rewrites
// the file and the document first.
func Check[V any](t *testing.T, set Set[V]) {
	t.Helper()
	generated, err := json.MarshalIndent(set.Generate(t), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	generated = append(generated, '\n')
	if *update {
		if err := os.WriteFile(set.File, generated, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stored, v := load[V](t, set.File)

	t.Run("verify", func(t *testing.T) { set.Verify(t, v) })
	t.Run("regenerate", func(t *testing.T) {
		if !bytes.Equal(generated, stored) {
			t.Errorf("generating the vectors again gives other bytes than %s: %s; review, then run with -update-vectors", set.File, set.Changed)
		}
	})
	t.Run("document", func(t *testing.T) {
		doc, err := os.ReadFile(WireFormatDoc)
		if err != nil {
			t.Fatal(err)
		}
		begin, end := bytes.Index(doc, []byte(set.Begin)), bytes.Index(doc, []byte(set.End))
		if begin < 0 || end < begin {
			t.Fatalf("%s has no generated test vector section (%q ... %q)", WireFormatDoc, set.Begin, set.End)
		}
		want := set.Render(v)
		got := string(doc[begin+len(set.Begin) : end])
		if *update && got != want {
			out := append(append(bytes.Clone(doc[:begin+len(set.Begin)]), want...), doc[end:]...)
			if err := os.WriteFile(WireFormatDoc, out, 0o644); err != nil {
				t.Fatal(err)
			}
			got = want
		}
		if got != want {
			t.Errorf("the test vectors in %s differ from %s; run with -update-vectors", filepath.Base(WireFormatDoc), set.File)
		}
	})
}

// Load reads the vector file at path (another set's, that a set builds on).
func Load[V any](t *testing.T, path string) *V {
	t.Helper()
	_, v := load[V](t, path)
	return v
}

func load[V any](t *testing.T, path string) ([]byte, *V) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v := new(V)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b, v
}
