package storecopy

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// engine records what a Copier asked of it: the plan, and the pairs each source gave.
type engine struct{ calls []string }

func (e *engine) run(what, plan string, src Source) (*Result, error) {
	n := 0
	err := src(func(string, []byte, []byte) error { n++; return nil })
	e.calls = append(e.calls, fmt.Sprint(what, " ", plan, " ", n))
	return &Result{}, err
}

func (e *engine) CopyIn(_ context.Context, plan string, src Source) (*Result, error) {
	return e.run("copy", plan, src)
}

func (e *engine) VerifyCopy(_ context.Context, plan string, src Source) (*Result, error) {
	return e.run("verify", plan, src)
}

// TestCopier: a copy prepares, then copies the file's source by the plan; a failed
// preparation copies nothing; a verification does not prepare; WithSource reads
// through its wrapper and leaves the copier it came from as it was.
func TestCopier(t *testing.T) {
	ctx := context.Background()
	e := &engine{}
	var paths []string
	source := func(path string) Source {
		return func(fn func(kind string, key, value []byte) error) error {
			paths = append(paths, path)
			for _, k := range []string{"a", "b", "c"} {
				if err := fn("kind", []byte(k), nil); err != nil {
					return err
				}
			}
			return nil
		}
	}
	prepared := 0
	var failPrepare error
	c := NewCopier[string](e, "plan", source).Prepare(func(_ context.Context, path string) error {
		prepared++
		return failPrepare
	})
	if _, err := c.Copy(ctx, "f.db"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(ctx, "f.db"); err != nil {
		t.Fatal(err)
	}
	failPrepare = errors.New("no partitions")
	if _, err := c.Copy(ctx, "f.db"); !errors.Is(err, failPrepare) {
		t.Fatalf("a copy whose preparation failed: %v", err)
	}
	failPrepare = nil
	stop := errors.New("stop")
	cut := c.WithSource(func(src Source) Source {
		return func(fn func(kind string, key, value []byte) error) error {
			return src(func(kind string, key, value []byte) error {
				if string(key) == "b" {
					return stop
				}
				return fn(kind, key, value)
			})
		}
	})
	if _, err := cut.Copy(ctx, "g.db"); !errors.Is(err, stop) {
		t.Fatalf("a copy through a cut source: %v", err)
	}
	if _, err := c.Copy(ctx, "f.db"); err != nil {
		t.Fatal(err)
	}
	want := []string{"copy plan 3", "verify plan 3", "copy plan 1", "copy plan 3"}
	if len(e.calls) != len(want) || prepared != 4 {
		t.Fatalf("engine calls %q, %d preparations; want %q, 4", e.calls, prepared, want)
	}
	for i := range want {
		if e.calls[i] != want[i] {
			t.Fatalf("engine calls %q, want %q", e.calls, want)
		}
	}
	if n := countPairs(c.Source("h.db")); n != 3 || paths[len(paths)-1] != "h.db" {
		t.Errorf("Source(h.db) streamed %d pairs of %q", n, paths)
	}
}

// countPairs is the number of pairs src streams.
func countPairs(src Source) int {
	n := 0
	_ = src(func(string, []byte, []byte) error { n++; return nil })
	return n
}
