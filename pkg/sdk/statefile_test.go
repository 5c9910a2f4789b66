package sdk

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestStateFiles: the pin file and the key transparency state read and write through
// one stateFile, each with its own words: a missing file is empty, a damaged one or one
// of another version is refused with what it holds and how to recover, and a written
// one (mode 0600) reads back.
func TestStateFiles(t *testing.T) {
	t.Parallel()
	type state struct {
		Version int    `json:"version"`
		Value   string `json:"value"`
	}
	for _, tc := range []struct {
		name                   string
		kind                   stateFile
		wantDamaged, wantNewer string
	}{
		{"pins", pinStateFile,
			"sdk: the pin file %s is damaged (unexpected end of JSON input): it holds which keys this device trusts; restore it, or remove it to trust on first use again",
			"sdk: the pin file %s has version 2; this SDK reads version 1"},
		{"key transparency", ktStateFile,
			"sdk: the key transparency state file %s is damaged (unexpected end of JSON input): it holds the log key and the checkpoint this device trusts; restore it, or remove it to trust the log's key and checkpoint on first use again",
			"sdk: the key transparency state file %s has version 2; this SDK reads version 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sub", "state")
			s := state{Version: tc.kind.version, Value: "as it was"}
			if err := tc.kind.read(path, &s, &s.Version); err != nil || s.Value != "as it was" {
				t.Fatalf("a missing file: %+v, %v; want the state as it was", s, err)
			}
			if err := tc.kind.write(path, state{Version: 1, Value: "written"}); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("the written file: %v, %v; want mode 0600", fi, err)
			}
			var back state
			if err := tc.kind.read(path, &back, &back.Version); err != nil || back.Value != "written" {
				t.Fatalf("read back %+v, %v", back, err)
			}
			for _, bad := range []struct{ content, want string }{
				{`{"version": 1, "value": `, tc.wantDamaged},
				{`{"version": 2}`, tc.wantNewer},
			} {
				if err := os.WriteFile(path, []byte(bad.content), 0o600); err != nil {
					t.Fatal(err)
				}
				var got state
				err := tc.kind.read(path, &got, &got.Version)
				if want := fmt.Sprintf(bad.want, path); err == nil || err.Error() != want {
					t.Errorf("reading %q: %v; want %s", bad.content, err, want)
				}
			}
		})
	}
}
