// The PostgreSQL engine's write transactions: the lock each takes on a group before it touches the group's data.

package group

import (
	"context"
	"errors"
	"hash/fnv"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
)

// writeState is what the calls of one write transaction share: the groups it has
// locked, with their records as they now are.
type writeState struct {
	// batch says that the transaction is a batch's: once it holds a lock, it may not
	// wait for another (see pgTx.lock).
	batch  bool
	groups map[groupRef]*lockedGroup
}

func newWriteState(batch bool) *writeState {
	return &writeState{batch: batch, groups: map[groupRef]*lockedGroup{}}
}

type groupRef struct{ app, group string }

// lockedGroup is a group the transaction holds: its record (none when absent is set),
// and whether the transaction changed it (dirty: PutGroup keeps the record here, and
// flush writes it once, however many times the transaction's calls changed it).
type lockedGroup struct {
	absent, dirty bool
	record        []byte
}

// flush writes the groups the transaction changed, before it commits.
func (w *writeState) flush(ctx context.Context, tx boundedTx) error {
	for k, g := range w.groups {
		if !g.dirty {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO groups (app_id, group_id, record) VALUES ($1, $2, $3)
			ON CONFLICT (app_id, group_id) DO UPDATE SET record = EXCLUDED.record`, k.app, k.group, g.record); err != nil {
			return err
		}
		g.dirty = false
	}
	return nil
}

// errWouldWait is what a batch's transaction gets when a group it needs is locked by
// another transaction while it holds locks of its own: waiting could deadlock with that
// transaction, so the call is run again on its own once the batch has committed.
var errWouldWait = errors.New("group store: the group is locked by another transaction")

// pgTx is a Tx on the PostgreSQL store: read-only (w is nil) or a write transaction.
type pgTx struct {
	ctx context.Context
	tx  boundedTx
	w   *writeState
	// wroteEvents says that this call wrote outbox records; wrote that it wrote
	// anything; wouldWait that it met a group locked elsewhere (errWouldWait), after
	// which it does nothing more.
	wroteEvents, wrote, wouldWait bool
}

func (t *pgTx) WroteEvents() bool { return t.wroteEvents }

// writing is called by every method that writes: it refuses once the call met a locked
// group, and records that the call wrote.
func (t *pgTx) writing() error {
	if t.wouldWait {
		return errWouldWait
	}
	t.wrote = true
	return nil
}

// writeGroup is called by every method that writes a group's data, before it does:
// it takes the group's lock (lock) and records that the call writes (writing).
func (t *pgTx) writeGroup(app, group string) error {
	if err := t.lock(app, group); err != nil {
		return err
	}
	return t.writing()
}

// lockKey is the advisory lock of a group that has no row: a 63-bit hash of its ids.
// Two groups whose hashes collide merely take turns.
func lockKey(app, group string) int64 {
	h := fnv.New64a()
	h.Write([]byte("umbra_group\x00" + app + "\x00" + group))
	return int64(h.Sum64() &^ (1 << 63))
}

// lock takes the lock of a group in a write transaction, once: its row FOR UPDATE, or,
// for a group without a row (being created, or deleted), an advisory lock on its ids,
// under which its row is looked for again. Once it holds a group's lock, the
// transaction reads everything the group's previous writers committed, and no other
// writer changes the group until it ends.
//
// A batch's transaction waits only while it holds no lock: it runs many callers'
// changes in turn, to different groups in no set order, and two such transactions
// waiting on each other would deadlock (which PostgreSQL detects only after a second).
// So once it holds one, it takes the others with SKIP LOCKED, and a caller whose group
// is locked elsewhere gets errWouldWait and runs on its own afterwards.
func (t *pgTx) lock(app, group string) error {
	if t.w == nil {
		return nil
	}
	if t.wouldWait {
		return errWouldWait
	}
	k := groupRef{app, group}
	if _, ok := t.w.groups[k]; ok {
		return nil
	}
	var g *lockedGroup
	var err error
	if t.w.batch && len(t.w.groups) > 0 {
		g, err = t.tryLock(app, group)
	} else {
		g, err = t.waitLock(app, group)
	}
	if errors.Is(err, errWouldWait) {
		t.wouldWait = true
	}
	if err != nil {
		return err
	}
	t.w.groups[k] = g
	return nil
}

const (
	lockGroupRow    = "SELECT record FROM groups WHERE app_id = $1 AND group_id = $2 FOR UPDATE"
	tryLockGroupRow = "SELECT record FROM groups WHERE app_id = $1 AND group_id = $2 FOR UPDATE SKIP LOCKED"
	groupRowExists  = "SELECT EXISTS (SELECT 1 FROM groups WHERE app_id = $1 AND group_id = $2)"
)

func (t *pgTx) waitLock(app, group string) (*lockedGroup, error) {
	if g, err := t.lockRow(lockGroupRow, app, group); g != nil || err != nil {
		return g, err
	}
	if _, err := t.tx.Exec(t.ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(app, group)); err != nil {
		return nil, err
	}
	// Another transaction may have created the group while this one waited.
	if g, err := t.lockRow(lockGroupRow, app, group); g != nil || err != nil {
		return g, err
	}
	return &lockedGroup{absent: true}, nil
}

func (t *pgTx) tryLock(app, group string) (*lockedGroup, error) {
	if g, err := t.lockRow(tryLockGroupRow, app, group); g != nil || err != nil {
		return g, err
	}
	var exists, got bool
	if err := t.tx.QueryRow(t.ctx, groupRowExists, app, group).Scan(&exists); err != nil {
		return nil, err
	}
	if exists {
		return nil, errWouldWait
	}
	if err := t.tx.QueryRow(t.ctx, "SELECT pg_try_advisory_xact_lock($1)", lockKey(app, group)).Scan(&got); err != nil {
		return nil, err
	}
	if !got {
		return nil, errWouldWait
	}
	if g, err := t.lockRow(tryLockGroupRow, app, group); g != nil || err != nil {
		return g, err
	}
	if err := t.tx.QueryRow(t.ctx, groupRowExists, app, group).Scan(&exists); err != nil {
		return nil, err
	}
	if exists {
		return nil, errWouldWait
	}
	return &lockedGroup{absent: true}, nil
}

// lockRow runs query, which locks the group's row and returns its record: nil when it
// returned none.
func (t *pgTx) lockRow(query, app, group string) (*lockedGroup, error) {
	rec, found, err := pgdb.GetBytes(t.ctx, t.tx, query, app, group)
	if err != nil || !found {
		return nil, err
	}
	return &lockedGroup{record: rec}, nil
}
