package boltdb

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// Why a write failed in storage: the values of WriteFailure.Reason, and of the reason
// label of the umbra_storage_write_failures_total metric.
const (
	// ReasonNoSpace: the file system has no room left, or the quota is spent
	// (errs.NoSpace: ENOSPC, EDQUOT).
	ReasonNoSpace = "no_space"
	// ReasonIO: any other failure to write, grow or sync the file (EIO, a read-only
	// file system...).
	ReasonIO = "io"
)

// DefaultProbeInterval is how often a failing store tries a probe write, so that it is
// found healthy again without waiting for a client's write.
const DefaultProbeInterval = 5 * time.Second

// ProbeBytes is the room a probe asks for beside the store before it calls the store
// healthy again. A small bbolt commit reuses pages freed inside the file and can succeed
// on a file system that is still full, while the next message, which needs new pages,
// fails again; the probe therefore also writes (and removes) a file of this size.
const ProbeBytes = 1 << 20

// WriteFailure is a write whose transaction was ready to commit but could not be made
// durable: nothing of it was written.
type WriteFailure struct {
	Reason string // ReasonNoSpace or ReasonIO
	Err    error
}

// Watch is told how the store's writes fare. Set it with DB.Watch.
type Watch struct {
	// Failed is called after every write that failed in storage (not one its own
	// function refused).
	Failed func(WriteFailure)
	// Changed is called when the store starts failing, with the failure, and with nil
	// when a write succeeds again (a client's or the probe's). It is called with the
	// store's health lock held, so calls come in order: it must not write to the
	// store.
	Changed func(*WriteFailure)
	// ProbeInterval is how often a failing store tries a probe write (ProbeBytes of room
	// beside the file, then a commit that changes nothing); 0 means
	// DefaultProbeInterval.
	ProbeInterval time.Duration
}

// writeHealth is a DB's record of its last write; the zero value is a healthy store
// with no watch.
type writeHealth struct {
	failingNow atomic.Bool                  // failing != nil, read without the lock
	fault      atomic.Pointer[func() error] // FailCommits

	mu      sync.Mutex
	watch   Watch
	failing *WriteFailure
	probing bool
	closed  bool
	stop    chan struct{} // made with the first probe, closed by Close
	probes  sync.WaitGroup
}

// probeKey is written and deleted again by a probe's commit, in the meta bucket.
var probeKey = []byte("write_probe")

// Watch sets what the store tells about its writes; the zero Watch tells nothing.
func (db *DB) Watch(w Watch) {
	db.health.mu.Lock()
	defer db.health.mu.Unlock()
	db.health.watch = w
}

// WriteFailure returns how the store's last write failed, or nil if it succeeded (or
// none failed yet).
func (db *DB) WriteFailure() *WriteFailure {
	db.health.mu.Lock()
	defer db.health.mu.Unlock()
	if db.health.failing == nil {
		return nil
	}
	f := *db.health.failing
	return &f
}

// FailCommits makes every write that gets as far as its commit fail with f's error
// instead, rolled back, as a full disk fails it; nil makes real commits again. Tests
// use it to show what clients, readiness and metrics see of a full disk where no small
// file system can be mounted for a real one.
func (db *DB) FailCommits(f func() error) {
	if f == nil {
		db.health.fault.Store(nil)
		return
	}
	db.health.fault.Store(&f)
}

// Update is bbolt's Update, recording whether the commit succeeded (see Watch).
func (db *DB) Update(fn func(*bolt.Tx) error) error {
	var ready bool
	err := db.DB.Update(db.tracked(fn, &ready))
	db.record(ready, err)
	return err
}

// Batch is bbolt's Batch, recording whether the commit succeeded (see Watch).
func (db *DB) Batch(fn func(*bolt.Tx) error) error {
	var ready bool
	err := db.DB.Batch(db.tracked(fn, &ready))
	db.record(ready, err)
	return err
}

// Close stops the probe, if one runs, and closes the file.
func (db *DB) Close() error {
	h := &db.health
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		if h.stop != nil {
			close(h.stop)
		}
	}
	h.mu.Unlock()
	h.probes.Wait()
	return db.DB.Close()
}

// tracked wraps fn so that ready says whether fn accepted its transaction: an error
// after that is the commit's, the storage's. bbolt may run a Batch function twice (again
// alone after another function of its batch failed), so ready is set on each run.
func (db *DB) tracked(fn func(*bolt.Tx) error, ready *bool) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		*ready = false
		if err := fn(tx); err != nil {
			return err
		}
		*ready = true
		if f := db.health.fault.Load(); f != nil {
			if err := (*f)(); err != nil {
				return fmt.Errorf("boltdb: commit %s: %w", db.Path(), err)
			}
		}
		return nil
	}
}

// record notes the outcome of a write whose function accepted its transaction (ready);
// any other outcome (the function's own error, a closed file) says nothing about the
// storage.
func (db *DB) record(ready bool, err error) {
	if !ready {
		return
	}
	h := &db.health
	if err == nil {
		if h.failingNow.Load() {
			db.recovered()
		}
		return
	}
	f := WriteFailure{Reason: ReasonIO, Err: err}
	if errs.NoSpace(err) {
		f.Reason = ReasonNoSpace
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watch.Failed != nil {
		h.watch.Failed(f)
	}
	if h.failing != nil {
		return
	}
	h.failing = &f
	h.failingNow.Store(true)
	if h.watch.Changed != nil {
		h.watch.Changed(&f)
	}
	if !h.probing && !h.closed {
		if h.stop == nil {
			h.stop = make(chan struct{})
		}
		h.probing = true
		interval := h.watch.ProbeInterval
		if interval <= 0 {
			interval = DefaultProbeInterval
		}
		h.probes.Add(1)
		go db.probe(interval, h.stop)
	}
}

// recovered marks the store healthy after a write succeeded.
func (db *DB) recovered() {
	h := &db.health
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failing == nil {
		return
	}
	h.failing = nil
	h.failingNow.Store(false)
	if h.watch.Changed != nil {
		h.watch.Changed(nil)
	}
}

// probe tries a probe write every interval while the store is failing, until one
// succeeds or the store is closed.
func (db *DB) probe(interval time.Duration, stop <-chan struct{}) {
	h := &db.health
	defer h.probes.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			h.mu.Lock()
			h.probing = false
			h.mu.Unlock()
			return
		case <-t.C:
		}
		if db.probeWrite() == nil {
			db.recovered()
		}
		h.mu.Lock()
		if h.failing == nil {
			h.probing = false
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
}

// probeWrite writes ProbeBytes beside the store, syncs and removes them, then commits
// a transaction that writes and deletes a key: it changes no record but writes pages,
// as any write does. A failure is not counted as a failed write: no client's write
// failed.
func (db *DB) probeWrite() error {
	if err := probeRoom(db.Path()+".probe", ProbeBytes); err != nil {
		return err
	}
	var ready bool
	return db.DB.Update(db.tracked(func(tx *bolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		if meta == nil {
			return errors.New("boltdb: no meta bucket")
		}
		if err := meta.Put(probeKey, U64(uint64(time.Now().UnixNano()))); err != nil {
			return err
		}
		return meta.Delete(probeKey)
	}, &ready))
}

// probeRoom writes n bytes (random, so that a compressing file system stores them all)
// to path, syncs them and removes the file.
func probeRoom(path string, n int) error {
	buf := make([]byte, n)
	rand.Read(buf)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(buf)
	serr := f.Sync()
	cerr := f.Close()
	rerr := os.Remove(path)
	return errors.Join(werr, serr, cerr, rerr)
}
