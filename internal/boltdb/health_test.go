package boltdb

import (
	"errors"
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// watched is a store with a Watch that records what it is told.
type watched struct {
	*DB
	mu      sync.Mutex
	failed  []WriteFailure
	changes []*WriteFailure
}

func openWatched(t *testing.T, probe time.Duration) *watched {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "t.db"), testSchema, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	w := &watched{DB: db}
	db.Watch(Watch{
		Failed: func(f WriteFailure) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.failed = append(w.failed, f)
		},
		Changed: func(f *WriteFailure) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.changes = append(w.changes, f)
		},
		ProbeInterval: probe,
	})
	return w
}

func (w *watched) counts() (failed int, changes []*WriteFailure) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.failed), append([]*WriteFailure(nil), w.changes...)
}

// waitChanges waits until the watch was told of n changes.
func (w *watched) waitChanges(t *testing.T, n int, within time.Duration) []*WriteFailure {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, changes := w.counts()
		if len(changes) >= n {
			return changes
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d health changes after %s, want %d", len(changes), within, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func noSpace(path string) func() error {
	return func() error { return &fs.PathError{Op: "write", Path: path, Err: syscall.ENOSPC} }
}

func put(db *DB, key string) error {
	return db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("things")).Put([]byte(key), []byte("v")) })
}

func has(t *testing.T, db *DB, key string) bool {
	t.Helper()
	var found bool
	if err := db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket([]byte("things")).Get([]byte(key)) != nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return found
}

// TestFailedCommitsMarkTheStoreAndAProbeClearsIt: a write that fails in storage is
// rolled back, counted with its reason, and marks the store failing; a write refused by
// its own function is none of that; while the store fails, a probe retries on its own
// and clears the mark once writes succeed again, with no other write needed.
func TestFailedCommitsMarkTheStoreAndAProbeClearsIt(t *testing.T) {
	w := openWatched(t, 20*time.Millisecond)
	w.FailCommits(noSpace(w.Path()))

	err := put(w.DB, "a")
	if !errs.NoSpace(err) {
		t.Fatalf("write on a full disk: %v, want an error that is ENOSPC", err)
	}
	if has(t, w.DB, "a") {
		t.Error("the failed write was stored")
	}
	refused := w.Update(func(*bolt.Tx) error { return errs.Invalidf("no") })
	if !errors.Is(refused, errs.ErrInvalid) {
		t.Fatalf("refused write: %v", refused)
	}
	if err := w.Batch(func(tx *bolt.Tx) error { return tx.Bucket([]byte("things")).Put([]byte("b"), []byte("v")) }); !errs.NoSpace(err) {
		t.Fatalf("batch on a full disk: %v", err)
	}
	failed, changes := w.counts()
	if failed != 2 {
		t.Errorf("%d failed writes counted, want 2 (the write and the batch, not the refusal)", failed)
	}
	if len(changes) != 1 || changes[0] == nil || changes[0].Reason != ReasonNoSpace {
		t.Fatalf("health changes %v, want one: failing for no space", changes)
	}
	if f := w.WriteFailure(); f == nil || f.Reason != ReasonNoSpace {
		t.Fatalf("WriteFailure = %v", f)
	}

	// Probes fail while the disk is full, and are not counted as clients' writes.
	time.Sleep(150 * time.Millisecond)
	if failed, changes := w.counts(); failed != 2 || len(changes) != 1 {
		t.Fatalf("while still full: %d failures, changes %v", failed, changes)
	}

	w.FailCommits(nil)
	changes = w.waitChanges(t, 2, 5*time.Second)
	if changes[1] != nil {
		t.Fatalf("second change %v, want recovery (nil)", changes[1])
	}
	if f := w.WriteFailure(); f != nil {
		t.Errorf("WriteFailure after recovery = %v", f)
	}
	// The probe left no record behind.
	if err := w.View(func(tx *bolt.Tx) error {
		if tx.Bucket(metaBucket).Get(probeKey) != nil {
			return errors.New("the probe's key is still there")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if err := put(w.DB, "c"); err != nil || !has(t, w.DB, "c") {
		t.Fatalf("write after recovery: %v", err)
	}
}

// TestASuccessfulWriteClearsTheMark: a client's write that succeeds clears the mark
// at once, without waiting for the probe; an I/O error that is not about space is
// reason "io".
func TestASuccessfulWriteClearsTheMark(t *testing.T) {
	w := openWatched(t, time.Hour)
	w.FailCommits(func() error { return syscall.EIO })
	if err := put(w.DB, "a"); !errors.Is(err, syscall.EIO) || errs.NoSpace(err) {
		t.Fatalf("write: %v, want EIO", err)
	}
	if f := w.WriteFailure(); f == nil || f.Reason != ReasonIO {
		t.Fatalf("WriteFailure = %v, want reason io", f)
	}
	w.FailCommits(nil)
	if err := put(w.DB, "a"); err != nil {
		t.Fatal(err)
	}
	_, changes := w.counts()
	if len(changes) != 2 || changes[1] != nil {
		t.Fatalf("changes %v, want failing then recovered", changes)
	}
}

// TestCloseStopsTheProbe: closing a failing store stops its probe (the race detector
// and the closed file would catch a probe still running).
func TestCloseStopsTheProbe(t *testing.T) {
	w := openWatched(t, time.Millisecond)
	w.FailCommits(noSpace(w.Path()))
	if err := put(w.DB, "a"); err == nil {
		t.Fatal("write succeeded")
	}
	time.Sleep(20 * time.Millisecond)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.FailCommits(nil)
	time.Sleep(20 * time.Millisecond)
	if _, changes := w.counts(); len(changes) != 1 {
		t.Fatalf("changes after close %v: a probe ran on", changes)
	}
}
