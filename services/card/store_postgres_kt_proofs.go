package card

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/transparency-dev/merkle/proof"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// Reads of the log in PostgreSQL: its latest checkpoint, entries, proofs and lookups.

func (s *PostgresStore) LatestCheckpoint() (*cardstoragev1.CheckpointRecord, error) {
	return latestCheckpointWith(s.viewLog)
}

// viewLog is the store's viewLog: a PostgreSQL read-only transaction.
func (s *PostgresStore) viewLog(f func(logReadTx) error) error {
	return s.db.View(func(ctx context.Context, tx pgx.Tx) error { return f(newPgKT(ctx, tx)) })
}

func (s *PostgresStore) LogEntries(start uint64, count int) ([][]byte, error) {
	var out [][]byte
	err := s.db.View(func(ctx context.Context, tx pgx.Tx) error {
		out = nil
		rows, err := tx.Query(ctx, "SELECT leaf FROM kt_leaves WHERE log_index >= $1 ORDER BY log_index LIMIT $2", sequenceBound(start), max(count, 0))
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[[]byte])
		return err
	})
	return out, err
}

// prefetchProof reads the log tiles that hold the nodes of a proof; a proof that
// cannot be made is left for kt to refuse.
func (t *pgKT) prefetchProof(nodes proof.Nodes, err error) error {
	if err != nil {
		return nil
	}
	keys := map[string]bool{}
	logTileKeys(keys, nodes.IDs, nil)
	return t.prefetch(tableLogTiles, t.logTiles, keys)
}

func (s *PostgresStore) InclusionProof(index, size uint64) ([]byte, [][]byte, error) {
	return inclusionProofWith(s.viewLog, index, size)
}

func (s *PostgresStore) ConsistencyProof(size1, size2 uint64) ([][]byte, error) {
	return consistencyProofWith(s.viewLog, size1, size2)
}

func (s *PostgresStore) ProvedCards(appID string, identities []string) (*cardstoragev1.CheckpointRecord, []ProvedCard, error) {
	var cp *cardstoragev1.CheckpointRecord
	var out []ProvedCard
	err := s.db.View(func(ctx context.Context, tx pgx.Tx) error {
		out = make([]ProvedCard, 0, len(identities))
		t := newPgKT(ctx, tx)
		var err error
		if cp, err = t.latest(); err != nil {
			return err
		}
		if cp == nil {
			return noCheckpoint()
		}
		// The trees' top tiles at this checkpoint come from its cache (the transaction
		// is a snapshot, so it reads the state of the checkpoint it read), and are not
		// read ahead.
		t.useCache(s.tiles.at(cp))
		size := cp.GetSize()
		if err := t.prefetchLookups(appID, identities, size); err != nil {
			return err
		}
		cards, err := t.namedCards(appID)
		if err != nil {
			return err
		}
		st := t.state()
		card := func(cardID []byte) (*cardstoragev1.CardRecord, error) {
			if c := cards[string(cardID)]; c != nil {
				return c, nil
			}
			return pgCard(ctx, tx, appID, cardID)
		}
		for _, id := range identities {
			pc, err := proveCard(st, t.leaf, size, appID, id, card)
			if err != nil {
				return err
			}
			out = append(out, pc)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return cp, out, nil
}

// useCache makes the trees read their top tiles through c, and the lookups' reads
// ahead skip them.
func (t *pgKT) useCache(c *kt.TileCache) {
	if c != nil {
		t.cache = c
		t.tiledLog.UseCache(c)
		t.tiledMap.UseCache(c)
	}
}

// prefetchLookups reads what the lookups of identities at a log of size entries need:
// their map values and paths, then the entries the values name and those entries'
// inclusion paths.
func (t *pgKT) prefetchLookups(appID string, identities []string, size uint64) error {
	keys := make([][kt.HashSize]byte, len(identities))
	for i, id := range identities {
		keys[i] = kt.MapKey(appID, id)
	}
	if err := t.prefetchMap(keys); err != nil {
		return err
	}
	var indices []int64
	tiles := map[string]bool{}
	for _, k := range keys {
		b := t.values[string(k[:])]
		if b == nil {
			continue
		}
		v, err := kt.ParseMapValue(b)
		if err != nil {
			continue // Prove reports it
		}
		index := v.GetCardLogIndex()
		if len(v.GetCardId()) == 0 {
			index = v.GetLatestLogIndex()
		}
		indices = append(indices, int64(index))
		if nodes, err := proof.Inclusion(index, size); err == nil {
			logTileKeys(tiles, nodes.IDs, t.cache)
		}
	}
	if err := t.prefetchLeaves(indices); err != nil {
		return err
	}
	return t.prefetch(tableLogTiles, t.logTiles, tiles)
}

// namedCards reads, in one query, the cards of appID that the prefetched map values
// name, by card id.
func (t *pgKT) namedCards(appID string) (map[string]*cardstoragev1.CardRecord, error) {
	var ids [][]byte
	for _, b := range t.values {
		if b == nil {
			continue
		}
		if v, err := kt.ParseMapValue(b); err == nil && len(v.GetCardId()) > 0 {
			ids = append(ids, v.GetCardId())
		}
	}
	out := map[string]*cardstoragev1.CardRecord{}
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := t.tx.Query(t.ctx, "SELECT c.card_id, c.record FROM unnest($2::bytea[]) AS w (id) JOIN cards c ON c.app_id = $1 AND c.card_id = w.id", appID, ids)
	if err != nil {
		return nil, err
	}
	_, err = pgdb.ScanWith(rows, func() *cardstoragev1.CardRecord { return &cardstoragev1.CardRecord{} },
		func(id []byte, b []byte, rec *cardstoragev1.CardRecord) error {
			if err := records.Decode("cards", cardRowKey(appID, id), b, rec); err != nil {
				return err
			}
			out[string(id)] = rec
			return nil
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}
