package durable

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWriteFileReplaces: the file holds what was written last, readable by its owner
// only, and no temporary file is left beside it.
func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for _, want := range []string{"first\n", "second\n"} {
		if err := WriteFile(path, []byte(want)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Fatalf("after writing %q: %q, %v", want, got, err)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the folder holds %d files, want the one", len(entries))
	}
}

// TestWriteFileRefusesAMissingFolder: nothing is written where the folder is missing.
func TestWriteFileRefusesAMissingFolder(t *testing.T) {
	if err := WriteFile(filepath.Join(t.TempDir(), "missing", "state.json"), []byte("x")); err == nil {
		t.Error("wrote into a missing folder")
	}
}
