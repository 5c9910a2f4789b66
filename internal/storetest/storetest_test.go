package storetest

import (
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
	fresh := func(testing.TB) string { places++; return string(rune('a' + places - 1)) }
	open := func(t testing.TB, at string) *store {
		return Open(t, func() (*store, error) { return &store{at: at}, nil })
	}

	s, reopen := Reopen[Store](fresh, open)(t)
	again := reopen(t)
	if !s.(*store).closed || again.(*store).closed || again.(*store).at != s.(*store).at || places != 1 {
		t.Errorf("reopen: first %+v, second %+v, %d places; want the first closed and the second open at the same place", s, again, places)
	}

	rs := Replicas[Store](fresh, open)(t, 3)
	if len(rs) != 3 || rs[0] == rs[1] || rs[0].(*store).at != rs[2].(*store).at || places != 2 {
		t.Errorf("replicas: %v over %d places; want three stores over one new place", rs, places)
	}

	ss := Shared[Store](fresh, open)(t, 3)
	if len(ss) != 3 || ss[0] != ss[1] || ss[1] != ss[2] || places != 3 {
		t.Errorf("shared: %v over %d places; want one store three times over one new place", ss, places)
	}
}
