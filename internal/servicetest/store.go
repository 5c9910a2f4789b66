package servicetest

import (
	"path/filepath"
	"testing"

	"github.com/umbra-e2ee/umbra/internal/storetest"
)

// Open opens a store with open, failing t on an error, and has e close it when it
// stops (OnStop): after every server and loop, so that none uses it closed.
func Open[S storetest.Closer](t testing.TB, e *Env, open func() (S, error)) S {
	t.Helper()
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	e.OnStop(s.Close)
	return s
}

// OpenFile opens the store file name in e's folder with open, as Open does, and has e
// check the file with verify once it is closed (Verify); a nil verify checks nothing.
func OpenFile[S storetest.Closer](t testing.TB, e *Env, name string, open func(path string) (S, error), verify Verifier) S {
	t.Helper()
	s := Open(t, e, func() (S, error) { return open(filepath.Join(e.Dir, name)) })
	if verify != nil {
		e.Verify(name, verify)
	}
	return s
}
