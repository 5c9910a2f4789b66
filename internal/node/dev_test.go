package node_test

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/runtest"
)

// runDev runs `umbra dev` on dir until it is ready, then stops it, and returns its
// error.
func runDev(t *testing.T, dir string) error {
	t.Helper()
	r, err := runtest.Start(t, "RunDev", node.RunningDev(t, dir, nil))
	if err != nil {
		return err
	}
	return r.Stop()
}

// credentialsFile is dev-credentials.json as found on disk.
type credentialsFile struct {
	content []byte
	inode   uint64
	mtime   time.Time
}

func readCredentials(t *testing.T, dir string) credentialsFile {
	t.Helper()
	path := filepath.Join(dir, "dev-credentials.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return credentialsFile{content: b, inode: fi.Sys().(*syscall.Stat_t).Ino, mtime: fi.ModTime()}
}

// TestDevRestartLeavesTheCredentialsFile: a restart of `umbra dev` whose credentials
// have not changed leaves dev-credentials.json as it is (same file, same mtime), so
// that it writes nothing it need not.
func TestDevRestartLeavesTheCredentialsFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := runDev(t, dir); err != nil {
		t.Fatal(err)
	}
	// An mtime in the past, which any write would change whatever the clock's
	// resolution.
	past := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(dir, "dev-credentials.json"), past, past); err != nil {
		t.Fatal(err)
	}
	before := readCredentials(t, dir)
	if err := runDev(t, dir); err != nil {
		t.Fatal(err)
	}
	after := readCredentials(t, dir)
	if !after.mtime.Equal(past) || after.inode != before.inode || !bytes.Equal(after.content, before.content) {
		t.Errorf("dev-credentials.json rewritten by a restart: mtime %s, inode %d → %d", after.mtime, before.inode, after.inode)
	}
}

// TestDevStartsOnAFullDisk: `umbra dev` restarts on a data folder whose file system is
// full (a real tmpfs, see tmpfsInMountNamespace), leaving its credentials file as it
// was.
func TestDevStartsOnAFullDisk(t *testing.T) {
	dir, inside := tmpfsInMountNamespace(t)
	if !inside {
		return
	}
	if err := runDev(t, dir); err != nil {
		t.Fatal(err)
	}
	before := readCredentials(t, dir)
	fillDisk(t, filepath.Join(dir, "filler"))
	if err := runDev(t, dir); err != nil {
		t.Fatalf("umbra dev on a full disk: %v", err)
	}
	after := readCredentials(t, dir)
	if !after.mtime.Equal(before.mtime) || after.inode != before.inode {
		t.Errorf("dev-credentials.json rewritten on a full disk")
	}
}
