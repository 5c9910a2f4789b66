// Package bench is the load generator behind `umbra bench`: it drives a running Umbra
// over real gRPC and measures, in the same run, the baseline the figures are judged
// against (the raw durable write rate of bbolt on the same disk).
package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
)

// RawConfig describes a raw bbolt write run.
type RawConfig struct {
	// Dir holds the temporary database; it should be on the disk the server uses.
	Dir string
	// Writers write concurrently, each waiting for its write to be durable.
	Writers int
	// ValueSize is the size of each value.
	ValueSize int
	// Duration bounds the run; Writes, when set, bounds it instead.
	Duration time.Duration
	Writes   int
}

// RawResult is what a raw run measured.
type RawResult struct {
	Writes  int
	Elapsed time.Duration
}

// Rate is the durable writes per second.
func (r RawResult) Rate() float64 { return float64(r.Writes) / r.Elapsed.Seconds() }

// RawDrain measures the best durable write rate bbolt gives on this disk for small
// concurrent writes: Writers goroutines each hand a value to one committer and wait
// until it is durable; the committer takes every pending write (no timer delay) and
// commits them in one fsynced transaction. It is the limit a durable store built on
// bbolt can approach.
func RawDrain(ctx context.Context, cfg RawConfig) (RawResult, error) {
	if cfg.Writers <= 0 || cfg.ValueSize < 8 || (cfg.Duration <= 0 && cfg.Writes <= 0) {
		return RawResult{}, fmt.Errorf("bench: raw run needs writers, values of 8 bytes or more, and a duration or a count")
	}
	dir, err := os.MkdirTemp(cfg.Dir, "umbra-bench-raw-")
	if err != nil {
		return RawResult{}, err
	}
	defer os.RemoveAll(dir)
	db, err := boltdb.Open(filepath.Join(dir, "raw.db"), boltdb.Schema{Version: 1, Buckets: [][]byte{[]byte("values")}},
		boltdb.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType, InitialMmapSize: 1 << 30})
	if err != nil {
		return RawResult{}, err
	}
	defer db.Close()

	var seq uint64
	return drainWrites(ctx, cfg.Writers, cfg.ValueSize, cfg.Duration, cfg.Writes, nil, func(values [][]byte) error {
		return db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("values"))
			b.FillPercent = 1 // keys only grow
			for _, v := range values {
				seq++
				if err := b.Put(boltdb.U64(seq), v); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// drainWrites is the raw baselines' driver, the same for every engine: writers
// goroutines each hand a value of valueSize bytes to one loop and wait until it is
// durable; the loop takes every pending write (no timer delay) and commits them as one
// batch (commit). The run stops after writes values in all when writes is positive,
// else after duration; the first failure stops it. onMeasure, when set, is called as
// the writers start and once they have stopped.
func drainWrites(ctx context.Context, writers, valueSize int, duration time.Duration, writes int, onMeasure func(start bool),
	commit func(values [][]byte) error) (RawResult, error) {
	type write struct {
		value []byte
		done  chan error
	}
	queue := make(chan *write, writers)
	stopLoop := make(chan struct{})
	var loop sync.WaitGroup
	loop.Go(func() {
		for {
			var batch []*write
			select {
			case w := <-queue:
				batch = append(batch, w)
			case <-stopLoop:
				return
			}
		drain:
			for {
				select {
				case w := <-queue:
					batch = append(batch, w)
				default:
					break drain
				}
			}
			values := make([][]byte, len(batch))
			for i, w := range batch {
				values[i] = w.value
			}
			err := commit(values)
			for _, w := range batch {
				w.done <- err
			}
		}
	})
	defer func() { close(stopLoop); loop.Wait() }()

	var (
		count   atomic.Int64
		stopped atomic.Bool
		failed  atomic.Pointer[error]
		wg      sync.WaitGroup
	)
	perWriter := 0
	if writes > 0 {
		perWriter = (writes + writers - 1) / writers
	}
	if onMeasure != nil {
		onMeasure(true)
	}
	start := time.Now()
	for range writers {
		wg.Go(func() {
			value := make([]byte, valueSize)
			rand.Read(value)
			w := &write{value: value, done: make(chan error, 1)}
			for i := 0; perWriter == 0 || i < perWriter; i++ {
				if stopped.Load() || ctx.Err() != nil {
					return
				}
				binary.BigEndian.PutUint64(value, uint64(i))
				queue <- w
				if err := <-w.done; err != nil {
					failed.Store(&err)
					stopped.Store(true)
					return
				}
				count.Add(1)
			}
		})
	}
	if writes <= 0 {
		select {
		case <-time.After(duration):
		case <-ctx.Done():
		}
		stopped.Store(true)
	}
	wg.Wait()
	res := RawResult{Writes: int(count.Load()), Elapsed: time.Since(start)}
	if onMeasure != nil {
		onMeasure(false)
	}
	if p := failed.Load(); p != nil {
		return res, *p
	}
	return res, ctx.Err()
}
