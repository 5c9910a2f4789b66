// Package copytest helps the tests of each service's copy from bbolt to PostgreSQL
// (`umbra admin migrate`, internal/storecopy).
package copytest

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
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

// Copy runs c's copy of the file at path and fails t unless it succeeds and leaves the
// file as it was: a copy never writes to its source.
func Copy(t testing.TB, c *storecopy.Copier, path string) *storecopy.Result {
	t.Helper()
	sum := FileSum(t, path)
	res, err := c.Copy(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if FileSum(t, path) != sum {
		t.Error("the copy wrote to its source")
	}
	return res
}

// InterruptedThenRerun cuts c's copy of the file at path after its first pair, after
// half its pairs and before its last: each fails and leaves table (schema-qualified, one
// the copy fills) without a row, for a copy is one transaction. Then the whole copy
// succeeds, and run again it finds the exact copy and writes nothing
// (Result.AlreadyCopied).
func InterruptedThenRerun(t testing.TB, db *pgtest.Database, c *storecopy.Copier, path, table string) {
	t.Helper()
	ctx := context.Background()
	n := Count(t, c.Source(path))
	for _, after := range []int{1, n / 2, n - 1} {
		cut := c.WithSource(func(src storecopy.Source) storecopy.Source { return Interrupted(src, after) })
		if _, err := cut.Copy(ctx, path); !errors.Is(err, ErrInterrupted) {
			t.Fatalf("the copy interrupted after %d of %d pairs: %v", after, n, err)
		}
		if got := pgtest.Query[int64](t, db, "SELECT count(*) FROM "+table); got[0] != 0 {
			t.Fatalf("%d rows of %s left by a copy interrupted after %d of %d pairs", got[0], table, after, n)
		}
	}
	if _, err := c.Copy(ctx, path); err != nil {
		t.Fatal(err)
	}
	res, err := c.Copy(ctx, path)
	if err != nil || !res.AlreadyCopied {
		t.Fatalf("the copy run again after it completed: %v", err)
	}
}
