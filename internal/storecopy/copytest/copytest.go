// Package copytest helps the tests of each service's copy from bbolt to PostgreSQL
// (`umbra admin migrate`, internal/storecopy).
package copytest

import (
	"crypto/sha256"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/umbra-e2ee/umbra/internal/storecopy"
)

// ErrInterrupted is what an Interrupted source fails with.
var ErrInterrupted = errors.New("copytest: the copy was interrupted")

// Interrupted streams src's first n pairs and then fails, as a copy killed half way.
func Interrupted(src storecopy.Source, n int) storecopy.Source {
	return func(fn func(kind string, key, value []byte) error) error {
		i := 0
		return src(func(kind string, key, value []byte) error {
			if i == n {
				return ErrInterrupted
			}
			i++
			return fn(kind, key, value)
		})
	}
}

// Count is the number of pairs src streams.
func Count(t testing.TB, src storecopy.Source) int {
	t.Helper()
	n := 0
	if err := src(func(string, []byte, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// FileSum is the SHA-256 of the file at path: the same before and after a copy, which
// never writes to its source.
func FileSum(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// WantDifferences fails t unless err is a refusal (of a copy or a verification, what)
// that names each of kinds among its differences (storecopy.Differences, one a line).
func WantDifferences(t testing.TB, what string, err error, kinds ...string) {
	t.Helper()
	for _, kind := range kinds {
		if err == nil || !strings.Contains(err.Error(), "\n  "+kind+":") {
			t.Errorf("%s: %v; want a difference in %s named", what, err, kind)
		}
	}
}

// Kinds are the kinds of a result whose count is not zero, with their counts.
func Kinds(r *storecopy.Result) map[string]int {
	out := map[string]int{}
	for k, s := range r.Source {
		if s.Count > 0 {
			out[k] = s.Count
		}
	}
	return out
}
