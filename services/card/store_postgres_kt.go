package card

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The key transparency log, its map and its checkpoints in PostgreSQL: the tables
// kt_* of migrations/00001_card.sql, keyed as card.db's buckets of the same names. As
// in card.db, the log's size is the size of its latest checkpoint, and entries are
// only appended in the transaction that stores the checkpoint of the new size; that
// transaction holds kt_log_state's row lock, so the appenders of several replicas take
// turns.
//
// A tile, a value or a leaf read one query at a time would cost a round trip each: a
// lookup proof crosses about ten tiles. So a transaction first reads, in one query per
// table, what its paths will need (prefetch), and the trees then read from memory;
// anything not prefetched is read on demand. Writes are sent in one statement per
// table when the transaction ends.

func (s *PostgresStore) LogKey(candidate *cardstoragev1.LogKeyRecord) (*cardstoragev1.LogKeyRecord, error) {
	var out *cardstoragev1.LogKeyRecord
	err := s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		var err error
		out, err = pgFirstKey(candidate, "log key",
			func() (*cardstoragev1.LogKeyRecord, bool, error) {
				key := &cardstoragev1.LogKeyRecord{}
				found, err := records.Get(ctx, tx, "kt_log_key", "current", key, "SELECT record FROM kt_log_key")
				return key, found, err
			},
			func(b []byte) (pgconn.CommandTag, error) {
				return tx.Exec(ctx, "INSERT INTO kt_log_key (one, record) VALUES (true, $1) ON CONFLICT DO NOTHING", b)
			},
			errors.New("card: the log key was refused, and there is none"))
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// The log's first key stays in kt_log_key; the keys that rotations add are in
// kt_log_keys (migrations/00002_kt_log_keys.sql). A rotation holds kt_log_state's row
// lock, as an append does, so that no append signs with a key set that a rotation is
// changing.

func (s *PostgresStore) LogKeys() ([]*cardstoragev1.LogKeyRecord, error) {
	var out []*cardstoragev1.LogKeyRecord
	err := s.db.View(func(ctx context.Context, tx pgx.Tx) error {
		var err error
		out, err = pgLogKeys(ctx, tx)
		return err
	})
	if err == nil && len(out) == 0 {
		err = noLogKey()
	}
	return out, err
}

// pgLogKeys reads every log key, oldest first; none before the first.
func pgLogKeys(ctx context.Context, tx pgx.Tx) ([]*cardstoragev1.LogKeyRecord, error) {
	first := &cardstoragev1.LogKeyRecord{}
	found, err := records.Get(ctx, tx, "kt_log_key", "current", first, "SELECT record FROM kt_log_key")
	if err != nil || !found {
		return nil, err
	}
	rows, err := tx.Query(ctx, "SELECT key_id, record FROM kt_log_keys")
	if err != nil {
		return nil, err
	}
	var added []*cardstoragev1.LogKeyRecord
	var id string
	var b []byte
	_, err = pgx.ForEachRow(rows, []any{&id, &b}, func() error {
		rec := &cardstoragev1.LogKeyRecord{}
		if err := records.Decode("kt_log_keys", id, b, rec); err != nil {
			return err
		}
		added = append(added, rec)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortLogKeys(added)
	return append([]*cardstoragev1.LogKeyRecord{first}, added...), nil
}

// lockLogState takes kt_log_state's row lock, which appends hold too.
func lockLogState(ctx context.Context, tx pgx.Tx) error {
	var size int64
	return tx.QueryRow(ctx, "SELECT size FROM kt_log_state FOR UPDATE").Scan(&size)
}

func (s *PostgresStore) AddLogKey(next *cardstoragev1.LogKeyRecord, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, error) {
	var out *cardstoragev1.CheckpointRecord
	err := s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		out = nil
		if err := lockLogState(ctx, tx); err != nil {
			return err
		}
		all, err := pgLogKeys(ctx, tx)
		if err != nil {
			return err
		}
		if err := checkAddLogKey(all, next); err != nil {
			return err
		}
		b, err := records.Encode(next)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO kt_log_keys (key_id, record) VALUES ($1, $2)", next.GetKeyId(), b); err != nil {
			return err
		}
		out, err = pgResignLatest(ctx, tx, signingLogKeys(append(all, next)), sign)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *PostgresStore) RetireLogKey(keyID string, at time.Time, sign CheckpointSigner) (*cardstoragev1.LogKeyRecord, *cardstoragev1.CheckpointRecord, error) {
	var retired *cardstoragev1.LogKeyRecord
	var out *cardstoragev1.CheckpointRecord
	err := s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		retired, out = nil, nil
		if err := lockLogState(ctx, tx); err != nil {
			return err
		}
		all, err := pgLogKeys(ctx, tx)
		if err != nil {
			return err
		}
		var remaining []*cardstoragev1.LogKeyRecord
		if retired, remaining, err = retireLogKey(all, keyID, at); err != nil {
			return err
		}
		b, err := records.Encode(retired)
		if err != nil {
			return err
		}
		if keyID == all[0].GetKeyId() {
			_, err = tx.Exec(ctx, "UPDATE kt_log_key SET record = $1", b)
		} else {
			_, err = tx.Exec(ctx, "UPDATE kt_log_keys SET record = $2 WHERE key_id = $1", keyID, b)
		}
		if err != nil {
			return err
		}
		out, err = pgResignLatest(ctx, tx, remaining, sign)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return retired, out, nil
}

// pgResignLatest signs the latest checkpoint again with keys and stores it in its
// place; nil before the first checkpoint.
func pgResignLatest(ctx context.Context, tx pgx.Tx, keys []*cardstoragev1.LogKeyRecord, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, error) {
	latest, err := newPgKT(ctx, tx).latest()
	if err != nil || latest == nil {
		return nil, err
	}
	rec, err := resignCheckpoint(latest, keys, sign)
	if err != nil {
		return nil, err
	}
	b, err := records.Encode(rec)
	if err != nil {
		return nil, err
	}
	_, err = tx.Exec(ctx, "UPDATE kt_checkpoints SET record = $2 WHERE size = $1", int64(rec.GetSize()), b)
	return rec, err
}

// pgKT is the log and the map in one PostgreSQL transaction: what it read (a key
// present with a nil value is known to be absent) and what it writes.
type pgKT struct {
	ctx                        context.Context
	tx                         pgx.Tx
	logTiles, mapTiles, values map[string][]byte
	leaves                     map[uint64][]byte
	putLog, putMap, putValues  map[string][]byte
	// cache, when set, holds the top tiles at the transaction's checkpoint: they are
	// neither read ahead nor read (a lookup's transaction only).
	cache    *kt.TileCache
	tiledLog *kt.TiledLogStore
	tiledMap *kt.TiledMapStore
}

func newPgKT(ctx context.Context, tx pgx.Tx) *pgKT {
	t := &pgKT{
		ctx: ctx, tx: tx,
		logTiles: map[string][]byte{}, mapTiles: map[string][]byte{}, values: map[string][]byte{},
		leaves: map[uint64][]byte{},
		putLog: map[string][]byte{}, putMap: map[string][]byte{}, putValues: map[string][]byte{},
	}
	t.tiledLog, t.tiledMap = kt.NewTiledLogStore(t), kt.NewTiledMapStore(t)
	return t
}

func (t *pgKT) state() kt.State { return kt.State{Log: t.tiledLog, Map: t.tiledMap, Values: t} }

// The tables of the trees, each a key column and a value column.
const (
	tableLogTiles  = "kt_log_tiles"
	tableMapTiles  = "kt_map_tiles"
	tableMapValues = "kt_map_values"
)

func columns(table string) (key, value string) {
	if table == tableMapValues {
		return "map_key", "value"
	}
	return "tile_key", "tile"
}

// get returns the value at key of table, from cache or read now; nil if there is none.
func (t *pgKT) get(table string, cache map[string][]byte, key []byte) ([]byte, error) {
	if v, ok := cache[string(key)]; ok {
		return v, nil
	}
	k, v := columns(table)
	var b []byte
	err := t.tx.QueryRow(t.ctx, "SELECT "+v+" FROM "+table+" WHERE "+k+" = $1", key).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		b, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	cache[string(key)] = b
	return b, nil
}

// prefetch reads the values at keys of table into cache, in one query.
func (t *pgKT) prefetch(table string, cache map[string][]byte, keys map[string]bool) error {
	var want [][]byte
	for k := range keys {
		if _, ok := cache[k]; !ok {
			want = append(want, []byte(k))
		}
	}
	if len(want) == 0 {
		return nil
	}
	k, v := columns(table)
	rows, err := t.tx.Query(t.ctx, "SELECT t."+k+", t."+v+" FROM unnest($1::bytea[]) AS w (k) JOIN "+table+" t ON t."+k+" = w.k", want)
	if err != nil {
		return err
	}
	defer rows.Close()
	for _, key := range want {
		cache[string(key)] = nil
	}
	for rows.Next() {
		var key, b []byte
		if err := rows.Scan(&key, &b); err != nil {
			return err
		}
		if b == nil {
			b = []byte{}
		}
		cache[string(key)] = b
	}
	return rows.Err()
}

func (t *pgKT) LogTile(id kt.LogTileID) ([]byte, error) {
	return t.get(tableLogTiles, t.logTiles, logTileKey(id))
}

func (t *pgKT) PutLogTile(id kt.LogTileID, tile []byte) error {
	k := string(logTileKey(id))
	t.logTiles[k], t.putLog[k] = tile, tile
	return nil
}

func (t *pgKT) MapTile(id kt.MapTileID) ([]byte, error) {
	return t.get(tableMapTiles, t.mapTiles, mapTileKey(id))
}

func (t *pgKT) PutMapTile(id kt.MapTileID, tile []byte) error {
	k := string(mapTileKey(id))
	t.mapTiles[k], t.putMap[k] = tile, tile
	return nil
}

func (t *pgKT) MapValue(key [kt.HashSize]byte) ([]byte, bool, error) {
	v, err := t.get(tableMapValues, t.values, key[:])
	return v, v != nil, err
}

func (t *pgKT) PutMapValue(key [kt.HashSize]byte, value []byte) error {
	v := bytes.Clone(value)
	t.values[string(key[:])], t.putValues[string(key[:])] = v, v
	return nil
}

// flush writes the log's and the map's tiles that changed, and the map values, in one
// statement per table.
func (t *pgKT) flush() error {
	if err := t.tiledLog.Flush(); err != nil {
		return err
	}
	if err := t.tiledMap.Flush(); err != nil {
		return err
	}
	for table, puts := range map[string]map[string][]byte{tableLogTiles: t.putLog, tableMapTiles: t.putMap, tableMapValues: t.putValues} {
		if len(puts) == 0 {
			continue
		}
		keys, values := make([][]byte, 0, len(puts)), make([][]byte, 0, len(puts))
		for k, v := range puts {
			keys, values = append(keys, []byte(k)), append(values, v)
		}
		k, v := columns(table)
		if _, err := t.tx.Exec(t.ctx, "INSERT INTO "+table+" ("+k+", "+v+") SELECT * FROM unnest($1::bytea[], $2::bytea[]) ON CONFLICT ("+k+") DO UPDATE SET "+v+" = EXCLUDED."+v, keys, values); err != nil {
			return err
		}
		clear(puts)
	}
	return nil
}

// leaf returns entry index's bytes.
func (t *pgKT) leaf(index uint64) ([]byte, error) {
	if v, ok := t.leaves[index]; ok && v != nil {
		return v, nil
	}
	var b []byte
	err := t.tx.QueryRow(t.ctx, "SELECT leaf FROM kt_leaves WHERE log_index = $1", sequenceBound(index)).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("card: key transparency log has no entry %d", index)
	}
	return b, err
}

// prefetchLeaves reads the entries at indices.
func (t *pgKT) prefetchLeaves(indices []int64) error {
	if len(indices) == 0 {
		return nil
	}
	rows, err := t.tx.Query(t.ctx, "SELECT l.log_index, l.leaf FROM unnest($1::bigint[]) AS w (i) JOIN kt_leaves l ON l.log_index = w.i", indices)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var i int64
		var b []byte
		if err := rows.Scan(&i, &b); err != nil {
			return err
		}
		t.leaves[uint64(i)] = b
	}
	return rows.Err()
}

// latest returns the latest checkpoint; nil if there is none.
func (t *pgKT) latest() (*cardstoragev1.CheckpointRecord, error) {
	var size int64
	var b []byte
	switch err := t.tx.QueryRow(t.ctx, "SELECT size, record FROM kt_checkpoints ORDER BY size DESC LIMIT 1").Scan(&size, &b); {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, err
	}
	cp := &cardstoragev1.CheckpointRecord{}
	if err := records.Decode("kt_checkpoints", fmt.Sprint(size), b, cp); err != nil {
		return nil, err
	}
	return cp, nil
}

// logTileKeys adds to keys the log tiles that hold nodes, but those that cache (which
// may be nil) holds.
func logTileKeys(keys map[string]bool, nodes []compact.NodeID, cache *kt.TileCache) {
	for _, n := range nodes {
		r := n.Level % kt.LogTileHeight
		id := kt.LogTileID{Level: uint8(n.Level / kt.LogTileHeight), Index: n.Index >> (kt.LogTileHeight - r)}
		if !cache.HasLogTile(id) {
			keys[string(logTileKey(id))] = true
		}
	}
}

// mapTileAt is the map tile at depth (a multiple of kt.MapTileHeight) on key's path.
func mapTileAt(key *[kt.HashSize]byte, depth int) kt.MapTileID {
	id := kt.MapTileID{Depth: uint16(depth)}
	full := depth / 8
	copy(id.Prefix[:full], key[:full])
	if r := depth % 8; r != 0 {
		id.Prefix[full] = key[full] & (0xff << (8 - r))
	}
	return id
}

// prefetchMap reads the values of keys and the map's tiles on their paths. A path ends
// where a tile is missing, so the tiles are read a level of tiles at a time, the next
// level only under tiles that are there: a handful of queries, each reading little
// more than what the paths hold. The top levels, which nearly every path crosses, come
// in the first query.
func (t *pgKT) prefetchMap(keys [][kt.HashSize]byte) error {
	values := map[string]bool{}
	for _, k := range keys {
		values[string(k[:])] = true
	}
	if err := t.prefetch(tableMapValues, t.values, values); err != nil {
		return err
	}
	const top = 3 * kt.MapTileHeight // depths 0, 4 and 8 at once
	open := keys
	for depth := 0; depth < 8*kt.HashSize && len(open) > 0; {
		last := depth
		if depth == 0 {
			last = top - kt.MapTileHeight
		}
		tiles := map[string]bool{}
		for i := range open {
			for d := depth; d <= last; d += kt.MapTileHeight {
				id := mapTileAt(&open[i], d)
				if held, _ := t.cache.HasMapTile(id); !held {
					tiles[string(mapTileKey(id))] = true
				}
			}
		}
		if err := t.prefetch(tableMapTiles, t.mapTiles, tiles); err != nil {
			return err
		}
		next := open[:0:0]
		for i := range open {
			// The path goes on under a tile that holds nodes.
			id := mapTileAt(&open[i], last)
			held, empty := t.cache.HasMapTile(id)
			if held && !empty || !held && t.mapTiles[string(mapTileKey(id))] != nil {
				next = append(next, open[i])
			}
		}
		open, depth = next, last+kt.MapTileHeight
	}
	return nil
}

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

func (s *PostgresStore) LatestCheckpoint() (*cardstoragev1.CheckpointRecord, error) {
	var out *cardstoragev1.CheckpointRecord
	err := s.db.View(func(ctx context.Context, tx pgx.Tx) error {
		var err error
		out, err = newPgKT(ctx, tx).latest()
		if err == nil && out == nil {
			err = noCheckpoint()
		}
		return err
	})
	return out, err
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
	var leaf []byte
	var hashes [][]byte
	err := s.db.View(func(ctx context.Context, tx pgx.Tx) error {
		t := newPgKT(ctx, tx)
		if err := checkLogSize(t.latest, size); err != nil {
			return err
		}
		var err error
		if leaf, err = t.leaf(index); err != nil {
			return err
		}
		if err := t.prefetchProof(proof.Inclusion(index, size)); err != nil {
			return err
		}
		hashes, err = kt.InclusionProof(t.tiledLog, index, size)
		return err
	})
	return leaf, hashes, err
}

func (s *PostgresStore) ConsistencyProof(size1, size2 uint64) ([][]byte, error) {
	var hashes [][]byte
	err := s.db.View(func(ctx context.Context, tx pgx.Tx) error {
		t := newPgKT(ctx, tx)
		if err := checkLogSize(t.latest, size2); err != nil {
			return err
		}
		if err := t.prefetchProof(proof.Consistency(size1, size2)); err != nil {
			return err
		}
		var err error
		hashes, err = kt.ConsistencyProof(t.tiledLog, size1, size2)
		return err
	})
	return hashes, err
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
	defer rows.Close()
	for rows.Next() {
		var id, b []byte
		if err := rows.Scan(&id, &b); err != nil {
			return nil, err
		}
		rec := &cardstoragev1.CardRecord{}
		if err := records.Decode("cards", cardRowKey(appID, id), b, rec); err != nil {
			return nil, err
		}
		out[string(id)] = rec
	}
	return out, rows.Err()
}
