package card

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/transparency-dev/merkle/compact"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
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
	b, _, err := pgdb.GetBytes(t.ctx, t.tx, "SELECT "+v+" FROM "+table+" WHERE "+k+" = $1", key)
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
	return writeThrough(t.logTiles, t.putLog, logTileKey(id), tile)
}

func (t *pgKT) MapTile(id kt.MapTileID) ([]byte, error) {
	return t.get(tableMapTiles, t.mapTiles, mapTileKey(id))
}

func (t *pgKT) PutMapTile(id kt.MapTileID, tile []byte) error {
	return writeThrough(t.mapTiles, t.putMap, mapTileKey(id), tile)
}

func (t *pgKT) MapValue(key [kt.HashSize]byte) ([]byte, bool, error) {
	v, err := t.get(tableMapValues, t.values, key[:])
	return v, v != nil, err
}

func (t *pgKT) PutMapValue(key [kt.HashSize]byte, value []byte) error {
	return writeThrough(t.values, t.putValues, key[:], bytes.Clone(value))
}

// writeThrough sets key to v in what the transaction read and in what it will write.
func writeThrough(read, write map[string][]byte, key, v []byte) error {
	read[string(key)], write[string(key)] = v, v
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
	b, found, err := pgdb.GetBytes(t.ctx, t.tx, "SELECT leaf FROM kt_leaves WHERE log_index = $1", sequenceBound(index))
	if err == nil && !found {
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
