package storetest

import (
	"fmt"
	"sync"
	"testing"
)

// store is a store over a place that records its Close.
type store struct {
	at     string
	closed bool
}

func (s *store) Close() error { s.closed = true; return nil }

type Store interface{ Close() error }

func TestEngines(t *testing.T) {
	places := 0
	fresh := func(testing.TB) string { places++; return fmt.Sprint("db", places) }
	open := Opener(func(at string) (*store, error) { return &store{at: at}, nil })
	db := Database[Store](fresh, open)

	s, reopen := db.Open(t)
	again := reopen(t)
	if !s.(*store).closed || again.(*store).closed || again.(*store).at != s.(*store).at || places != 1 {
		t.Errorf("reopen: first %+v, second %+v, %d places; want the first closed and the second open at the same place", s, again, places)
	}

	rs := db.Replicas(t, 3)
	if len(rs) != 3 || rs[0] == rs[1] || rs[0].(*store).at != rs[2].(*store).at || places != 2 {
		t.Errorf("database replicas: %v over %d places; want three stores over one new place", rs, places)
	}

	var paths []string
	file := File[Store]("x.db", func(t testing.TB, path string) *store {
		paths = append(paths, path)
		return Open(t, func() (*store, error) { return &store{at: path}, nil })
	})
	fs := file.Replicas(t, 3)
	if len(fs) != 3 || fs[0] != fs[1] || fs[1] != fs[2] || len(paths) != 1 {
		t.Errorf("file replicas: %v over %v; want one store three times over one new file", fs, paths)
	}
}

func TestRunRunsEveryCase(t *testing.T) {
	var mu sync.Mutex
	var ran []string
	record := func(name string) {
		mu.Lock()
		defer mu.Unlock()
		ran = append(ran, name)
	}
	t.Run("suite", func(t *testing.T) {
		Run(t, "engine", []Case[string]{
			{"A", func(t *testing.T, e string) { record("A/" + e) }},
			{"B", func(t *testing.T, e string) { record("B/" + e) }},
		})
	})
	if len(ran) != 2 {
		t.Errorf("ran %v; want both cases over the engine", ran)
	}
}
