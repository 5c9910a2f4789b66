package card

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/transparency-dev/merkle/compact"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The log's appender in PostgreSQL: one replica at a time, under kt_log_state's lock.

func (s *PostgresStore) AppendLog(limit int, at time.Time, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, int, error) {
	return appendLogWith(s.updateLog, limit, at, sign)
}

// updateLog is the store's updateLog: a transaction that holds kt_log_state's lock.
func (s *PostgresStore) updateLog(f func(appendTx) error) error {
	return s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		// The single appender: another replica's append waits here, and then reads
		// the size this one leaves.
		var stateSize int64
		if err := tx.QueryRow(ctx, "SELECT size FROM kt_log_state FOR UPDATE").Scan(&stateSize); err != nil {
			return err
		}
		return f(pgAppendTx{newPgKT(ctx, tx), stateSize})
	})
}

// pgAppendTx is a PostgreSQL transaction that holds kt_log_state's lock, as the log's
// appender uses it; stateSize is the size kt_log_state says the log has.
type pgAppendTx struct {
	*pgKT
	stateSize int64
}

var _ appendTx = pgAppendTx{}

// latest also checks that kt_log_state agrees with the latest checkpoint.
func (t pgAppendTx) latest() (*cardstoragev1.CheckpointRecord, error) {
	latest, err := t.pgKT.latest()
	if err != nil {
		return nil, err
	}
	if size := latest.GetSize(); uint64(t.stateSize) != size {
		return nil, errs.Damagedf("card store: %s.kt_log_state says the log has %d entries, its latest checkpoint %d", Schema, t.stateSize, size)
	}
	return latest, nil
}

func (t pgAppendTx) events(after uint64, limit int) ([]*cardstoragev1.CardEventRecord, error) {
	return pgEvents(t.ctx, t.tx, after, limit)
}

// readAhead reads the values and map paths of the keys the append changes, and the
// log's right edge, where the new nodes go.
func (t pgAppendTx) readAhead(size uint64, evs []*cardstoragev1.CardEventRecord) error {
	keys := make([][kt.HashSize]byte, len(evs))
	for i, ev := range evs {
		keys[i] = kt.MapKey(ev.GetAppId(), ev.GetIdentity())
	}
	if err := t.prefetchMap(keys); err != nil {
		return err
	}
	newSize := size + uint64(len(evs))
	logTiles := map[string]bool{}
	logTileKeys(logTiles, compact.RangeNodes(0, size, nil), nil)
	for level := uint8(0); uint(level)*kt.LogTileHeight < 64; level++ {
		shift := (uint(level) + 1) * kt.LogTileHeight
		for i := size >> shift; i <= newSize>>shift; i++ {
			logTiles[string(logTileKey(kt.LogTileID{Level: level, Index: i}))] = true
		}
		if newSize>>shift == 0 {
			break
		}
	}
	return t.prefetch(tableLogTiles, t.logTiles, logTiles)
}

func (t pgAppendTx) putLeaves(size uint64, leaves [][]byte) error {
	indices := make([]int64, len(leaves))
	for i := range leaves {
		indices[i] = int64(size) + int64(i)
	}
	_, err := t.tx.Exec(t.ctx, "INSERT INTO kt_leaves (log_index, leaf) SELECT * FROM unnest($1::bigint[], $2::bytea[])", indices, leaves)
	return err
}

func (t pgAppendTx) logKeys() ([]*cardstoragev1.LogKeyRecord, error) { return pgLogKeys(t.ctx, t.tx) }

// putCheckpoint also moves kt_log_state to the new size.
func (t pgAppendTx) putCheckpoint(rec *cardstoragev1.CheckpointRecord) error {
	b, err := records.Encode(rec)
	if err != nil {
		return err
	}
	if _, err := t.tx.Exec(t.ctx, "INSERT INTO kt_checkpoints (size, record) VALUES ($1, $2)", int64(rec.GetSize()), b); err != nil {
		return err
	}
	_, err = t.tx.Exec(t.ctx, "UPDATE kt_log_state SET size = $1", int64(rec.GetSize()))
	return err
}
