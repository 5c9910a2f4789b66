package group

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// maxBatchCalls is how many Batch calls share one transaction at most (bbolt's default).
const maxBatchCalls = 1000

// Batch is Update coalesced with concurrent calls into one transaction, as the bbolt
// engine's: AuthorizeSend counts every encrypted message, and one commit for all the
// messages of a moment costs one WAL flush instead of one each. fn may run more than
// once (only one run commits), so it must reset whatever it reports.
//
// The calls of a batch run in turn in its transaction. One that fails is taken out and
// run on its own (so the others commit without what it half wrote), and so is one that
// meets a group another transaction holds while the batch holds locks of its own
// (pgTx.lock: a batch never waits while it holds a lock, so two batches cannot
// deadlock).
func (s *PostgresStore) Batch(fn func(Tx) error) error {
	errc := make(chan error, 1)
	s.batchMu.Lock()
	if s.batch == nil || len(s.batch.calls) >= maxBatchCalls {
		b := &pgBatch{s: s}
		b.timer = time.AfterFunc(batchDelay, b.trigger)
		s.batch = b
	}
	b := s.batch
	b.calls = append(b.calls, batchCall{fn: fn, err: errc})
	if len(b.calls) >= maxBatchCalls {
		go b.trigger()
	}
	s.batchMu.Unlock()
	return <-errc
}

// pgBatch is the calls that will share one transaction.
type pgBatch struct {
	s     *PostgresStore
	timer *time.Timer
	start sync.Once
	calls []batchCall
}

type batchCall struct {
	fn  func(Tx) error
	err chan<- error
}

func (b *pgBatch) trigger() { b.start.Do(b.run) }

func (b *pgBatch) run() {
	b.s.batchMu.Lock()
	b.timer.Stop()
	if b.s.batch == b {
		b.s.batch = nil
	}
	b.s.batchMu.Unlock()
	b.s.runBatch(b.calls)
}

// errCallOut ends a batch's transaction whose call `out` must run on its own.
var errCallOut = errors.New("group store: a call of the batch runs on its own")

// runBatch runs calls in one transaction and tells each its outcome.
func (s *PostgresStore) runBatch(calls []batchCall) {
	solo := func(c batchCall) { go func() { c.err <- s.Update(c.fn) }() }
	for len(calls) > 0 {
		out := -1
		var later []int
		ctx, cancel := context.WithTimeout(context.Background(), TxTimeout)
		err := s.db.InTx(ctx, pgx.TxOptions{}, func(ptx pgx.Tx) error {
			tx := boundedTx{ptx}
			out, later = -1, later[:0]
			w := newWriteState(true)
			for i, c := range calls {
				t := &pgTx{ctx: ctx, tx: tx, w: w}
				err := c.fn(t)
				switch {
				case t.wouldWait && !t.wrote:
					later = append(later, i) // it changed nothing: the others go on
				case t.wouldWait || err != nil:
					out = i
					return errCallOut
				}
			}
			return w.flush(ctx, tx)
		})
		cancel()
		if out >= 0 && errors.Is(err, errCallOut) {
			solo(calls[out])
			calls = append(calls[:out:out], calls[out+1:]...)
			continue
		}
		for i, c := range calls {
			if err == nil && len(later) > 0 && later[0] == i {
				later = later[1:]
				solo(c)
				continue
			}
			c.err <- err
		}
		return
	}
}
