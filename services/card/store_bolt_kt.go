package card

import (
	"bytes"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/transparency-dev/merkle/proof"
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The key transparency log, its map and its checkpoints in card.db. The log's size is
// the size of its latest checkpoint: entries are only ever appended in the transaction
// that stores the checkpoint of the new size.

// ktTx is the log and the map in one bbolt transaction: the tiles under the log
// (tiledLog) and the map (tiledMap), and kt.MapValues.
type ktTx struct {
	leaves, logTiles, mapTiles, values, checkpoints *bolt.Bucket
	tiledLog                                        *kt.TiledLogStore
	tiledMap                                        *kt.TiledMapStore
}

func newKTTx(tx *bolt.Tx) *ktTx {
	t := &ktTx{
		leaves:      tx.Bucket(bucketKTLeaves),
		logTiles:    tx.Bucket(bucketKTLogTiles),
		mapTiles:    tx.Bucket(bucketKTMapTiles),
		values:      tx.Bucket(bucketKTMapValues),
		checkpoints: tx.Bucket(bucketKTCheckpoints),
	}
	t.tiledLog, t.tiledMap = kt.NewTiledLogStore(t), kt.NewTiledMapStore(t)
	return t
}

func (t *ktTx) state() kt.State { return kt.State{Log: t.tiledLog, Map: t.tiledMap, Values: t} }

// flush writes the log's and the map's tiles that changed.
func (t *ktTx) flush() error {
	if err := t.tiledLog.Flush(); err != nil {
		return err
	}
	return t.tiledMap.Flush()
}

// get reads and checks the sealed value at key of b; nil if there is none.
func get(b *bolt.Bucket, key []byte) ([]byte, error) {
	v := b.Get(key)
	if v == nil {
		return nil, nil
	}
	return boltdb.Unseal(b, key, v)
}

func (t *ktTx) LogTile(id kt.LogTileID) ([]byte, error) { return get(t.logTiles, logTileKey(id)) }

func (t *ktTx) PutLogTile(id kt.LogTileID, tile []byte) error {
	return boltdb.PutRecord(t.logTiles, logTileKey(id), tile)
}

func (t *ktTx) MapTile(id kt.MapTileID) ([]byte, error) { return get(t.mapTiles, mapTileKey(id)) }

func (t *ktTx) PutMapTile(id kt.MapTileID, tile []byte) error {
	return boltdb.PutRecord(t.mapTiles, mapTileKey(id), tile)
}

func (t *ktTx) MapValue(key [kt.HashSize]byte) ([]byte, bool, error) {
	v, err := get(t.values, key[:])
	return v, v != nil, err
}

func (t *ktTx) PutMapValue(key [kt.HashSize]byte, value []byte) error {
	return boltdb.PutRecord(t.values, key[:], append(make([]byte, 0, len(value)+boltdb.ChecksumSize), value...))
}

// leaf returns entry index's bytes (a copy, valid after the transaction).
func (t *ktTx) leaf(index uint64) ([]byte, error) {
	v, err := get(t.leaves, boltdb.U64(index))
	if err == nil && v == nil {
		err = fmt.Errorf("card: key transparency log has no entry %d", index)
	}
	return append([]byte(nil), v...), err
}

// latest returns the latest checkpoint; nil if there is none.
func (t *ktTx) latest() (*cardstoragev1.CheckpointRecord, error) {
	k, _ := t.checkpoints.Cursor().Last()
	if k == nil {
		return nil, nil
	}
	cp := &cardstoragev1.CheckpointRecord{}
	if err := boltdb.GetProto(t.checkpoints, k, cp); err != nil {
		return nil, err
	}
	return cp, nil
}

func (s *BoltStore) AppendLog(limit int, at time.Time, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, int, error) {
	return appendLogWith(s.updateLog, limit, at, sign)
}

// updateLog is the store's updateLog: a bbolt read-write transaction.
func (s *BoltStore) updateLog(f func(appendTx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return f(boltAppendTx{newKTTx(tx), tx}) })
}

// boltAppendTx is a bbolt transaction as the log's appender uses it.
type boltAppendTx struct {
	*ktTx
	tx *bolt.Tx
}

var _ appendTx = boltAppendTx{}

func (t boltAppendTx) events(after uint64, limit int) ([]*cardstoragev1.CardEventRecord, error) {
	return boltEvents(t.tx.Bucket(bucketEvents), after, limit)
}

// readAhead does nothing: bbolt reads from the file's mapping.
func (t boltAppendTx) readAhead(uint64, []*cardstoragev1.CardEventRecord) error { return nil }

func (t boltAppendTx) putLeaves(size uint64, leaves [][]byte) error {
	for i, leaf := range leaves {
		if err := boltdb.PutRecord(t.leaves, boltdb.U64(size+uint64(i)), bytes.Clone(leaf)); err != nil {
			return err
		}
	}
	return nil
}

func (t boltAppendTx) logKeys() ([]*cardstoragev1.LogKeyRecord, error) { return boltLogKeys(t.tx) }

func (t boltAppendTx) putCheckpoint(rec *cardstoragev1.CheckpointRecord) error {
	return boltdb.PutProto(t.checkpoints, boltdb.U64(rec.GetSize()), rec)
}

func (s *BoltStore) LatestCheckpoint() (*cardstoragev1.CheckpointRecord, error) {
	return latestCheckpointWith(s.viewLog)
}

// viewLog is the store's viewLog: a bbolt read-only transaction.
func (s *BoltStore) viewLog(f func(logReadTx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return f(newKTTx(tx)) })
}

// prefetchProof does nothing: bbolt reads from the file's mapping.
func (t *ktTx) prefetchProof(proof.Nodes, error) error { return nil }

func (s *BoltStore) LogEntries(start uint64, count int) ([][]byte, error) {
	var out [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		t := newKTTx(tx)
		c := t.leaves.Cursor()
		for k, v := c.Seek(boltdb.U64(start)); k != nil && len(out) < count; k, v = c.Next() {
			leaf, err := boltdb.Unseal(t.leaves, k, v)
			if err != nil {
				return err
			}
			out = append(out, append([]byte(nil), leaf...))
		}
		return nil
	})
	return out, err
}

func (s *BoltStore) InclusionProof(index, size uint64) ([]byte, [][]byte, error) {
	return inclusionProofWith(s.viewLog, index, size)
}

func (s *BoltStore) ConsistencyProof(size1, size2 uint64) ([][]byte, error) {
	return consistencyProofWith(s.viewLog, size1, size2)
}

func (s *BoltStore) ProvedCards(appID string, identities []string) (*cardstoragev1.CheckpointRecord, []ProvedCard, error) {
	var cp *cardstoragev1.CheckpointRecord
	out := make([]ProvedCard, len(identities))
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if cp, err = newKTTx(tx).latest(); err != nil {
			return err
		}
		if cp == nil {
			return noCheckpoint()
		}
		// The lookups' paths share the trees' top levels: those come from the cache of
		// this checkpoint, read once for all the lookups made at it. The lookups are
		// shared among the cores: a read-only bbolt transaction may be read from several
		// goroutines (nothing in it is written: its pages are the file's mapping), and
		// each share has its own buckets and trees over it.
		cache := s.tiles.at(cp)
		return inParallel(len(identities), func(lo, hi int) error {
			t := newKTTx(tx)
			t.useCache(cache)
			st, cards := t.state(), tx.Bucket(bucketCards)
			for i := lo; i < hi; i++ {
				pc, err := proveCard(st, t.leaf, cp.GetSize(), appID, identities[i], func(cardID []byte) (*cardstoragev1.CardRecord, error) {
					return cardIn(cards, appID, cardID)
				})
				if err != nil {
					return err
				}
				out[i] = pc
			}
			return nil
		})
	})
	if err != nil {
		return nil, nil, err
	}
	return cp, out, nil
}

// useCache makes the trees read their top tiles through c (none when nil).
func (t *ktTx) useCache(c *kt.TileCache) {
	if c != nil {
		t.tiledLog.UseCache(c)
		t.tiledMap.UseCache(c)
	}
}
