package messaging

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// Bounds of one batch: a batch is one transaction and one fsync, and every request in
// it waits for the whole, so it is bounded to keep latency low.
const (
	maxBatchOps     = 2048
	maxBatchEntries = 20000   // index entries: a 10,000-recipient event is one batch
	maxBatchBytes   = 8 << 20 // envelopes and payloads
	queueLen        = 4096
	// flushIdle is how long the committer waits for work before it writes down the
	// pending index entries.
	flushIdle = 100 * time.Millisecond
	// maxFlushRetry bounds the wait between flushes that fail.
	maxFlushRetry = 5 * time.Second
	// fullPause is how long after a batch failed for lack of space the next batches are
	// refused the same way without a try. A failed commit is not cheap: bbolt rebuilds
	// its free-page list by reading the whole file (messaging.db keeps no freelist on
	// disk), and clients retrying in a loop would keep it doing that.
	fullPause = time.Second
)

// committer is the one goroutine that writes. Requests queue on a channel; the
// committer blocks for the first, takes every other one already waiting (without
// waiting for more: the next batch gathers while this one commits), applies them in one
// transaction, then wakes the streams of the inboxes that grew and answers each
// request.
type committer struct {
	store  Store
	now    func() time.Time
	ttl    time.Duration
	notify *notifier
	log    *zap.Logger

	queue   chan *request
	tasks   chan *task
	stopped chan struct{} // closed once the committer has stopped for good

	fullUntil time.Time // the committer's own: see fullPause
}

type request struct {
	op   *Op
	err  error
	done chan struct{}
	// after is the request queued just before this one on the same SendStream, until
	// the committer takes this one. If it failed (its batch did: storage full, an I/O
	// error, the database unreachable), this one fails too, unapplied: nothing of a
	// stream is stored after a message that was not, since the client resends from
	// the first message without a reply, in order.
	after *request
}

// failed reports whether r is done and failed as a whole (not refused on its own,
// op.Err). A request not done yet is in the batch being committed, whose fate it
// shares.
func (r *request) failed() bool {
	select {
	case <-r.done:
		return r.err != nil
	default:
		return false
	}
}

// errEarlierFailed is the error of a stream's request whose predecessor failed.
func errEarlierFailed() error {
	return errs.Unavailablef("an earlier message of this send stream was not stored, so neither was this one (the stream's order is kept): open a new stream and resend the messages that got no reply, with the same client_message_ids")
}

// task is other store work that must not run concurrently with Apply: a sweep or a
// flush.
type task struct {
	run  func()
	done chan struct{}
}

func newCommitter(store Store, now func() time.Time, ttl time.Duration, notify *notifier, log *zap.Logger) *committer {
	return &committer{
		store:   store,
		now:     now,
		ttl:     ttl,
		notify:  notify,
		log:     log,
		queue:   make(chan *request, queueLen),
		tasks:   make(chan *task),
		stopped: make(chan struct{}),
	}
}

// storageFull is the error of op in a batch that failed for lack of space: nothing of
// the batch was written, so the client may retry it as it is.
func storageFull(op *Op) error {
	const full = "the messaging service's storage is full"
	switch {
	case op.Send != nil:
		return errs.StorageFullf("%s: this message was not stored; retrying it later with the same client_message_id is safe (it is stored once)", full)
	case op.Event != nil:
		return errs.StorageFullf("%s: this event was not stored; retrying it later with the same event_id is safe (it is stored once)", full)
	}
	return errs.StorageFullf("%s: nothing was written; retrying later is safe", full)
}

func errStopped() error {
	return errs.Unavailablef("the messaging service is shutting down; retry (with the same client_message_id)")
}

// submit queues op and waits until it is durable or refused (op.Err), or the batch
// failed (the error returned).
func (c *committer) submit(ctx context.Context, op *Op) error {
	r, err := c.enqueue(ctx, op)
	if err != nil {
		return err
	}
	return c.wait(ctx, r)
}

// enqueue queues op without waiting for it to commit; wait then waits for it. Once ctx
// has ended it queues nothing more, so that of a stream's requests, queued one after
// the other under one context, those queued are always the first ones.
func (c *committer) enqueue(ctx context.Context, op *Op) (*request, error) {
	return c.enqueueAfter(ctx, op, nil)
}

// enqueueAfter is enqueue for a stream's request, after the one queued before it on
// the stream (nil for the first): see request.after.
func (c *committer) enqueueAfter(ctx context.Context, op *Op, after *request) (*request, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &request{op: op, done: make(chan struct{}), after: after}
	select {
	case c.queue <- r:
		return r, nil
	case <-c.stopped:
		return nil, errStopped()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// wait waits until r is durable or refused (r.op.Err), or its batch failed (the error
// returned).
func (c *committer) wait(ctx context.Context, r *request) error {
	select {
	case <-r.done:
		return r.err
	case <-c.stopped:
		select {
		case <-r.done:
			return r.err
		default:
			return errStopped()
		}
	case <-ctx.Done():
		// The op may still commit; a retry with the same idempotency key finds it.
		return ctx.Err()
	}
}

// do runs fn on the committer, between two batches.
func (c *committer) do(ctx context.Context, fn func()) error {
	t := &task{run: fn, done: make(chan struct{})}
	select {
	case c.tasks <- t:
	case <-c.stopped:
		return errStopped()
	case <-ctx.Done():
		return ctx.Err()
	}
	<-t.done // the committer always runs a task it took
	return nil
}

// sweep asks the committer to delete up to limit expired entries.
func (c *committer) sweep(ctx context.Context, now time.Time, limit int) (deleted int, more bool, err error) {
	if derr := c.do(ctx, func() { deleted, more, err = c.store.Sweep(now, limit) }); derr != nil {
		return 0, false, derr
	}
	return deleted, more, err
}

// run commits until ctx ends, then commits what is queued already and stops.
func (c *committer) run(ctx context.Context) {
	idle := time.NewTimer(flushIdle)
	idle.Stop()
	flushRetry := flushIdle
	var carry *request
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-c.queue:
			case t := <-c.tasks:
				t.run()
				close(t.done)
				continue
			case <-idle.C:
				pending, err := c.store.Flush()
				if err != nil {
					// A full disk fails every flush until there is room: back off, and
					// log the first failure of a run (the store's watch logs its cause).
					if flushRetry == flushIdle {
						c.log.Error("flush pending index entries", zap.Error(err))
					}
					idle.Reset(flushRetry)
					flushRetry = min(2*flushRetry, maxFlushRetry)
					continue
				}
				flushRetry = flushIdle
				if pending {
					idle.Reset(flushIdle)
				}
				continue
			case <-ctx.Done():
				c.drain(nil)
				return
			}
		}
		var batch []*request
		batch, carry = c.collect(first)
		c.commit(batch)
		idle.Reset(flushIdle)
	}
}

// drain commits whatever is queued, then marks the committer stopped.
func (c *committer) drain(carry *request) {
	defer close(c.stopped)
	for {
		first := carry
		if first == nil {
			select {
			case first = <-c.queue:
			default:
				return
			}
		}
		var batch []*request
		batch, carry = c.collect(first)
		c.commit(batch)
	}
}

// collect takes first and every request already queued, within the batch bounds. A
// request over the bounds is returned to start the next batch.
func (c *committer) collect(first *request) (batch []*request, carry *request) {
	batch = append(make([]*request, 0, 64), first)
	entries, bytes := first.op.Cost()
	for len(batch) < maxBatchOps {
		select {
		case r := <-c.queue:
			e, b := r.op.Cost()
			if entries+e > maxBatchEntries || bytes+b > maxBatchBytes {
				return batch, r
			}
			batch = append(batch, r)
			entries, bytes = entries+e, bytes+b
		default:
			return batch, nil
		}
	}
	return batch, nil
}

// apply applies b, turning a panic into the batch's error: the transaction is rolled
// back, and the service keeps running for the other batches.
func (c *committer) apply(b *Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("panic in the committer", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("messaging: committer: panic: %v", r)
		}
	}()
	return c.store.Apply(b)
}

func (c *committer) commit(batch []*request) {
	// A stream's request whose predecessor failed is failed too (request.after); the
	// predecessor, queued before it, is in an earlier batch, done, or in this one.
	kept := batch[:0]
	for _, r := range batch {
		after := r.after
		r.after = nil // a long stream must not hold on to all its requests
		if after != nil && after.failed() {
			r.err = errEarlierFailed()
			close(r.done)
			continue
		}
		kept = append(kept, r)
	}
	if batch = kept; len(batch) == 0 {
		return
	}
	ops := make([]*Op, len(batch))
	for i, r := range batch {
		ops[i] = r.op
	}
	b := &Batch{Now: c.now(), Retention: c.ttl, Ops: ops}
	var err error
	full := time.Now().Before(c.fullUntil)
	if !full {
		err = c.apply(b)
		if full = errs.NoSpace(err); full {
			c.fullUntil = time.Now().Add(fullPause)
		}
	}
	// Senders first: each is waiting for this reply to send its next message, while a
	// stream's reader gets the new items a moment later either way.
	for _, r := range batch {
		r.err = err
		if full {
			r.err = storageFull(r.op)
		}
		close(r.done)
	}
	if err == nil && !full {
		c.notify.bump(b.Grown)
	}
}
