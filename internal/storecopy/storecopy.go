// Package storecopy is the engine-neutral part of `umbra admin migrate`, which copies a
// service's bbolt file into its PostgreSQL schema: the stream of records between the
// engines, and the counts and checksums that prove a copy exact.
//
// A store is read as record kinds: each bbolt bucket is a kind, its pairs the keys and
// the values it holds (a sealed record without its checksum, an index entry as it is),
// and a bucket's sequence (bbolt's NextSequence) is a kind of its own,
// "<bucket>.sequence", with one pair when it is not zero. The PostgreSQL engine of the
// service writes each pair into its tables, and reads them back as the same pairs,
// rebuilding the bbolt keys from its key columns, so that the checksum of a kind is
// computed the same way from both engines (docs/storage-postgres.md, "Moving an
// existing deployment").
package storecopy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
)

// SequenceSuffix ends the name of the kind that holds a bucket's sequence.
const SequenceSuffix = ".sequence"

// Source streams a store's records. fn must not keep key or value after it returns.
type Source func(fn func(kind string, key, value []byte) error) error

// Sum is one kind's count and checksum: SHA-256 over its pairs sorted by key, each as
// u64(len(key)) key sha256(value). The pairs may come in any order (a log is read in
// its own order); what is kept until the sum is taken is each key and its value's hash.
type Sum struct {
	Count   int
	entries []entry
	sum     []byte
}

type entry struct {
	key  string
	hash [sha256.Size]byte
}

// Add counts the pair key, value.
func (s *Sum) Add(key, value []byte) error {
	s.entries = append(s.entries, entry{string(key), sha256.Sum256(value)})
	s.Count++
	s.sum = nil
	return nil
}

// Hex is the checksum in hex. A key that came twice makes it a sum of nothing: the
// error of Check says so.
func (s *Sum) Hex() string {
	if s.sum == nil {
		slices.SortFunc(s.entries, func(a, b entry) int { return strings.Compare(a.key, b.key) })
		h := sha256.New()
		var n [8]byte
		for _, e := range s.entries {
			binary.BigEndian.PutUint64(n[:], uint64(len(e.key)))
			h.Write(n[:])
			h.Write([]byte(e.key))
			h.Write(e.hash[:])
		}
		s.sum = h.Sum(nil)
	}
	return hex.EncodeToString(s.sum)
}

// Check finds a key that came twice, which no store holds: it would be two records
// where the store keeps one.
func (s *Sum) Check() error {
	s.Hex()
	for i := 1; i < len(s.entries); i++ {
		if s.entries[i].key == s.entries[i-1].key {
			return fmt.Errorf("key %x comes twice", s.entries[i].key)
		}
	}
	return nil
}

// Sums are a store's sums, by kind.
type Sums map[string]*Sum

// NewSums has an empty sum for each of kinds.
func NewSums(kinds []string) Sums {
	s := Sums{}
	for _, k := range kinds {
		s[k] = &Sum{}
	}
	return s
}

// Add counts a pair of kind, which must be one of the sums' kinds.
func (s Sums) Add(kind string, key, value []byte) error {
	sum, ok := s[kind]
	if !ok {
		return fmt.Errorf("record kind %q is unknown to the copier", kind)
	}
	return sum.Add(key, value)
}

// Check runs each sum's Check.
func (s Sums) Check() error {
	for _, k := range s.Kinds() {
		if err := s[k].Check(); err != nil {
			return fmt.Errorf("record kind %q: %w", k, err)
		}
	}
	return nil
}

// Empty reports whether no kind has a pair.
func (s Sums) Empty() bool {
	for _, sum := range s {
		if sum.Count > 0 {
			return false
		}
	}
	return true
}

// Kinds are the kinds, sorted.
func (s Sums) Kinds() []string {
	var out []string
	for k := range s {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Differences names each kind whose count or checksum differs between source and
// target, with both, in kind order; none when the two are equal.
func Differences(source, target Sums) []string {
	var out []string
	kinds := source.Kinds()
	for _, k := range target.Kinds() {
		if _, ok := source[k]; !ok {
			kinds = append(kinds, k)
		}
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		s, t := source[k], target[k]
		if s == nil {
			s = &Sum{}
		}
		if t == nil {
			t = &Sum{}
		}
		if s.Count != t.Count || s.Hex() != t.Hex() {
			out = append(out, fmt.Sprintf("%s: %d records, sha256 %.16s… in PostgreSQL; %d records, sha256 %.16s… in the file", k, t.Count, t.Hex(), s.Count, s.Hex()))
		}
	}
	return out
}

// Result is what copying one store did.
type Result struct {
	// Store is the service: "identity".
	Store string
	// Schema is the PostgreSQL schema it went into.
	Schema string
	// AlreadyCopied is true when nothing was written: the schema held an exact copy
	// already, or held other data (the error says what), or only a comparison ran.
	AlreadyCopied bool
	// Source and Target are the sums of the file and of the schema after the copy.
	Source, Target Sums
}

// Print writes the table of the result's kinds: counts and checksums of both engines.
func (r *Result) Print(w io.Writer) {
	state := "copied and verified"
	switch {
	case len(Differences(r.Source, r.Target)) > 0:
		state = "DIFFERS from the file (nothing written)"
	case r.AlreadyCopied:
		state = "an exact copy of the file, verified (nothing written)"
	}
	fmt.Fprintf(w, "%s -> schema %s: %s\n", r.Store, r.Schema, state)
	fmt.Fprintf(w, "  %-28s %10s %10s  %s\n", "kind", "file", "postgres", "sha256")
	for _, k := range r.Source.Kinds() {
		s, t := r.Source[k], r.Target[k]
		if t == nil {
			t = &Sum{}
		}
		mark := "ok"
		if s.Count != t.Count || s.Hex() != t.Hex() {
			mark = "DIFFERS"
		}
		fmt.Fprintf(w, "  %-28s %10d %10d  %.16s  %s\n", k, s.Count, t.Count, s.Hex(), mark)
	}
}

// Summary is one line: the kinds and records copied.
func (r *Result) Summary() string {
	n := 0
	var kinds []string
	for _, k := range r.Source.Kinds() {
		n += r.Source[k].Count
		if r.Source[k].Count > 0 {
			kinds = append(kinds, k)
		}
	}
	return fmt.Sprintf("%s: %d records of %d kinds (%s)", r.Store, n, len(kinds), strings.Join(kinds, ", "))
}
