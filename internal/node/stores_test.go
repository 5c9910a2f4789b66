package node

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/runtest"
)

// startNode runs every role over dir until it is ready and returns its logs and its
// stop; or, when Run fails before it is ready, its error.
func startNode(t *testing.T, dir string, allow ...string) (*observer.ObservedLogs, func(), error) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	cfg := testConfig(dir)
	cfg.AllowEmptyStores = allow
	r, err := runtest.Start(t, "Run", running(cfg, zap.New(core)))
	if err != nil {
		return logs, nil, err
	}
	return logs, func() { r.StopChecked(t) }, nil
}

func readManifestFile(t *testing.T, dir string) manifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// runOnce starts a node over dir and stops it once it is ready, failing the test if it
// does not start; it returns the node's logs.
func runOnce(t *testing.T, dir string, allow ...string) *observer.ObservedLogs {
	t.Helper()
	logs, stop, err := startNode(t, dir, allow...)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	return logs
}

// TestDataFolderListsItsStores: the first start lists every store it created, in a
// private file.
func TestDataFolderListsItsStores(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runOnce(t, dir)
	if m := readManifestFile(t, dir); !slices.Equal(m.Stores, slices.Sorted(slices.Values(gateway.Services()))) || m.Format != 1 {
		t.Errorf("manifest %+v, want every store", m)
	}
	if fi, err := os.Stat(filepath.Join(dir, ManifestFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("manifest: %v, %v; want mode 600", fi, err)
	}
}

// TestMissingOrEmptyStoreIsRefused: a store the folder held, deleted or emptied, is
// refused with one line that names its file, the restore command and the flag, and is
// left as it is; with the flag it starts empty, logged as a warning.
func TestMissingOrEmptyStoreIsRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, state string
		lose        func(path string) error
	}{
		{"emptied", "is empty (0 bytes)", func(path string) error { return os.Truncate(path, 0) }},
		{"deleted", "is missing", os.Remove},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			runOnce(t, dir)
			path := filepath.Join(dir, "messaging.db")
			if err := tc.lose(path); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Stat(path)

			_, _, err := startNode(t, dir)
			if err == nil {
				t.Fatal("a lost messaging.db started as a new, empty one")
			}
			msg := err.Error()
			for _, want := range []string{path + " " + tc.state, "held the messaging store", "umbra admin restore --store messaging", "--allow-empty-store messaging"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q is more than one line", msg)
			}
			if after, _ := os.Stat(path); (before == nil) != (after == nil) || after != nil && after.Size() != 0 {
				t.Errorf("the refused start changed %s", path)
			}

			logs, stop, err := startNode(t, dir, "messaging")
			if err != nil {
				t.Fatalf("with --allow-empty-store: %v", err)
			}
			stop()
			if n := logs.FilterMessageSnippet("starting an EMPTY store").FilterField(zap.String("store", "messaging")).Len(); n != 1 {
				t.Errorf("%d warnings that messaging.db started empty, want 1", n)
			}
			// Started once, it is listed again: losing it again is refused again.
			if err := tc.lose(path); err != nil {
				t.Fatal(err)
			}
			if _, _, err := startNode(t, dir); err == nil {
				t.Error("lost again: started")
			}
		})
	}
}

// TestAllowEmptyStoreFlag: the flag names stores only, and on a store that is present it
// changes nothing but says so.
func TestAllowEmptyStoreFlag(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, _, err := startNode(t, dir, "messages"); err == nil || !strings.Contains(err.Error(), `"messages" is not a store`) {
		t.Errorf("unknown store: %v", err)
	}
	runOnce(t, dir)
	logs := runOnce(t, dir, "card")
	if logs.FilterMessageSnippet("changes nothing").FilterField(zap.String("store", "card")).Len() != 1 {
		t.Error("no warning that the flag names a store that is present")
	}
}

// TestFolderWithoutListAdoptsItsStores: a folder written before the list (or whose list
// was deleted) starts with the stores it has, an empty one with a warning, and is listed
// from then on.
func TestFolderWithoutListAdoptsItsStores(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runOnce(t, dir)
	if err := os.Remove(filepath.Join(dir, ManifestFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "group.db"), 0); err != nil {
		t.Fatal(err)
	}
	logs := runOnce(t, dir)
	if logs.FilterMessageSnippet("no telling whether the file held data").FilterField(zap.String("store", "group")).Len() != 1 {
		t.Error("no warning about the empty group.db")
	}
	if m := readManifestFile(t, dir); len(m.Stores) != len(gateway.Services()) {
		t.Errorf("manifest %+v, want every store listed again", m)
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := startNode(t, dir); err == nil || !strings.Contains(err.Error(), "is damaged") {
		t.Errorf("damaged list: %v", err)
	}
}

// TestDamagedStoreStopsTheNode: a store with a damaged page stops the node with a
// DamagedError naming its file, whichever store it is, instead of a panic.
func TestDamagedStoreStopsTheNode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	runOnce(t, dir)
	for _, store := range []string{"identity", "group", "messaging"} {
		path := filepath.Join(dir, store+".db")
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// 64 bytes flipped in the elements of a leaf page in use.
		leaf, pageSize := leafPage(t, path)
		damaged := slices.Clone(orig)
		for i := range 64 {
			damaged[leaf*pageSize+16+i] ^= 0xFF
		}
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err = startNode(t, dir)
		var d *boltdb.DamagedError
		if !errors.As(err, &d) || d.Path != path {
			t.Errorf("%s: %v, want a DamagedError naming %s", store, err, path)
		}
		if err := os.WriteFile(path, orig, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// leafPage returns a leaf page in use in the bbolt file at path, and the page size.
func leafPage(t *testing.T, path string) (int, int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	leaf := 0
	err = db.View(func(tx *bolt.Tx) error {
		for id := 2; ; id++ {
			info, err := tx.Page(id)
			if err != nil || info == nil {
				return err
			}
			if info.Type == "leaf" {
				leaf = id
			}
		}
	})
	if err != nil || leaf == 0 {
		t.Fatalf("no leaf page in %s: %v", path, err)
	}
	return leaf, db.Info().PageSize
}
