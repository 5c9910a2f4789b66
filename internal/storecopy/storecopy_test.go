package storecopy

import (
	"strings"
	"testing"
)

func TestSums(t *testing.T) {
	add := func(s Sums, kind string, kv ...string) {
		for i := 0; i < len(kv); i += 2 {
			if err := s.Add(kind, []byte(kv[i]), []byte(kv[i+1])); err != nil {
				t.Fatal(err)
			}
		}
	}
	a, b := NewSums([]string{"k", "other"}), NewSums([]string{"k", "other"})
	add(a, "k", "a", "1", "b", "2", "c", "3")
	add(b, "k", "c", "3", "a", "1", "b", "2") // another order: the same sum
	if d := Differences(a, b); len(d) != 0 || a.Empty() || !NewSums([]string{"k"}).Empty() {
		t.Fatalf("the same pairs in another order differ: %v", d)
	}
	for _, tc := range []struct {
		name string
		kv   []string
	}{
		{"a value changed", []string{"a", "1", "b", "2", "c", "4"}},
		{"a value moved to another key", []string{"a", "1", "b", "3", "c", "2"}},
		{"a pair missing", []string{"a", "1", "b", "2"}},
		{"a key changed", []string{"a", "1", "b", "2", "d", "3"}},
		{"a byte moved between key and value", []string{"a", "1", "b", "2", "c3", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewSums([]string{"k", "other"})
			add(c, "k", tc.kv...)
			d := Differences(a, c)
			if len(d) != 1 || !strings.HasPrefix(d[0], "k: ") {
				t.Errorf("differences %v, want kind k", d)
			}
		})
	}
	if err := a.Add("unknown", nil, nil); err == nil {
		t.Error("a pair of a kind the copier does not know was counted")
	}
	add(b, "k", "a", "1")
	if err := b.Check(); err == nil || !strings.Contains(err.Error(), "comes twice") {
		t.Errorf("a key twice: %v", err)
	}
}
