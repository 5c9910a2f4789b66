package main

import (
	"io"
	"slices"
	"testing"
)

// TestAllowEmptyStoreFlag: --allow-empty-store takes comma-separated store names, may be
// repeated, falls back to UMBRA_ALLOW_EMPTY_STORE, and refuses a name that is no store.
func TestAllowEmptyStoreFlag(t *testing.T) {
	parseArgs := func(args ...string) (storesFlag, error) {
		fs := newFlagSet("test", io.Discard)
		var s storesFlag
		registerAllowEmpty(fs, &s)
		return s, parse(fs, args)
	}
	if s, err := parseArgs("--allow-empty-store", "messaging, group", "--allow-empty-store", "card,messaging"); err != nil ||
		!slices.Equal(s, storesFlag{"messaging", "group", "card"}) {
		t.Errorf("repeated and comma-separated: %q, %v", s, err)
	}
	if _, err := parseArgs("--allow-empty-store", "messages"); err == nil {
		t.Error("a name that is no store was accepted")
	}
	t.Setenv("UMBRA_ALLOW_EMPTY_STORE", "identity")
	if s, err := parseArgs(); err != nil || !slices.Equal(s, storesFlag{"identity"}) {
		t.Errorf("from the environment: %q, %v", s, err)
	}
}
