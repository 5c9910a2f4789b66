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
	var out *cardstoragev1.CheckpointRecord
	appended := 0
	err := s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		out, appended = nil, 0
		// The single appender: another replica's append waits here, and then reads
		// the size this one leaves.
		var stateSize int64
		if err := tx.QueryRow(ctx, "SELECT size FROM kt_log_state FOR UPDATE").Scan(&stateSize); err != nil {
			return err
		}
		t := newPgKT(ctx, tx)
		latest, err := t.latest()
		if err != nil {
			return err
		}
		size := latest.GetSize()
		if uint64(stateSize) != size {
			return errs.Damagedf("card store: %s.kt_log_state says the log has %d entries, its latest checkpoint %d", Schema, stateSize, size)
		}
		evs, err := pgEvents(ctx, tx, size, max(limit, 0))
		if err != nil {
			return err
		}
		leaves, err := logLeaves(size, evs)
		if err != nil {
			return err
		}
		keys := make([][kt.HashSize]byte, len(evs))
		for i, ev := range evs {
			keys[i] = kt.MapKey(ev.GetAppId(), ev.GetIdentity())
		}
		if len(leaves) == 0 && latest != nil {
			out = latest
			return nil
		}
		newSize := size + uint64(len(leaves))
		// What the append reads: the values and map paths of the keys it changes, and
		// the log's right edge, where the new nodes go.
		if err := t.prefetchMap(keys); err != nil {
			return err
		}
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
		if err := t.prefetch(tableLogTiles, t.logTiles, logTiles); err != nil {
			return err
		}

		logRoot, mapRoot, err := t.state().Append(size, leaves)
		if err != nil {
			return err
		}
		if err := t.flush(); err != nil {
			return err
		}
		indices := make([]int64, len(leaves))
		for i := range leaves {
			indices[i] = int64(size) + int64(i)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO kt_leaves (log_index, leaf) SELECT * FROM unnest($1::bigint[], $2::bytea[])", indices, leaves); err != nil {
			return err
		}
		signers, err := pgLogKeys(ctx, tx)
		if err != nil {
			return err
		}
		if out, err = signCheckpoint(newSize, logRoot, mapRoot, signers, at, sign); err != nil {
			return err
		}
		b, err := records.Encode(out)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO kt_checkpoints (size, record) VALUES ($1, $2)", int64(newSize), b); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE kt_log_state SET size = $1", int64(newSize)); err != nil {
			return err
		}
		appended = len(leaves)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, appended, nil
}
