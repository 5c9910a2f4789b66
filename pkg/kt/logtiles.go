package kt

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// The log's nodes are stored in tiles too: a log tile holds the nodes of LogTileHeight
// levels over 16 consecutive nodes of its bottom level (16 + 8 + 4 + 2 positions), so
// an inclusion proof in a log of a million entries reads 5 tiles instead of 20 nodes.

// LogTileHeight is how many levels of the log one stored tile holds.
const LogTileHeight = 4

// logTilePositions is 16 + 8 + 4 + 2; logTileRow[r] is where level r of a tile starts.
const logTilePositions = 30

var logTileRow = [LogTileHeight]int{0, 16, 24, 28}

// LogTileID names a log tile: tile level Level holds node levels 4·Level to 4·Level+3;
// Index counts tiles from the left.
type LogTileID struct {
	Level uint8
	Index uint64
}

// LogTileStore holds a log's tiles as bytes. LogTile returns nil for a tile that
// holds nothing.
type LogTileStore interface {
	LogTile(id LogTileID) ([]byte, error)
	PutLogTile(id LogTileID, tile []byte) error
}

// TiledLogStore is a LogStore over a LogTileStore: it reads each tile once and keeps
// it, and writes the tiles that changed on Flush. It is meant for one transaction.
type TiledLogStore struct {
	st    LogTileStore
	tiles map[LogTileID]*logTile
	// cache, when set, is shared with other readers of the same state (UseCache).
	cache *TileCache
}

// NewTiledLogStore returns a LogStore over the tiles of st.
func NewTiledLogStore(st LogTileStore) *TiledLogStore {
	return &TiledLogStore{st: st, tiles: map[LogTileID]*logTile{}}
}

// logTile is a tile as read: its stored hashes, in full once it is written to.
type logTile struct {
	present uint32
	raw     []byte // the present positions' hashes, in order
	hashes  *[logTilePositions][HashSize]byte
	dirty   bool
	// shared: the tile is in a TileCache, so it never changes; a write goes to a copy.
	shared bool
}

func logTileOf(level uint, index uint64) (LogTileID, int) {
	r := level % LogTileHeight
	shift := LogTileHeight - r
	return LogTileID{Level: uint8(level / LogTileHeight), Index: index >> shift}, logTileRow[r] + int(index&(1<<shift-1))
}

// UseCache makes s read the tiles c holds from c, and keep in c the tiles it reads
// that c keeps (TileCache). c must be the cache of the state that s reads: the caller
// keys caches by checkpoint. It is meant for reads; a write to a cached tile writes to
// a copy.
func (s *TiledLogStore) UseCache(c *TileCache) { s.cache = c }

func (s *TiledLogStore) tile(id LogTileID) (*logTile, error) {
	return logTree.tile(s.tiles, s.cache, id, s.read)
}

// read reads and decodes the tile id from the store.
func (s *TiledLogStore) read(id LogTileID) (*logTile, error) {
	b, err := s.st.LogTile(id)
	if err != nil {
		return nil, err
	}
	t := &logTile{}
	if b != nil {
		if len(b) < 4 {
			return nil, fmt.Errorf("kt: log tile %d/%d of %d bytes", id.Level, id.Index, len(b))
		}
		t.present = binary.BigEndian.Uint32(b)
		if t.present>>logTilePositions != 0 || len(b) != 4+bits.OnesCount32(t.present)*HashSize {
			return nil, fmt.Errorf("kt: log tile %d/%d of %d bytes for positions %030b", id.Level, id.Index, len(b), t.present)
		}
		// A copy: the stored bytes are the storage engine's.
		t.raw = append([]byte(nil), b[4:]...)
	}
	return t, nil
}

func (t *logTile) hash(pos int) []byte {
	if t.hashes != nil {
		return t.hashes[pos][:]
	}
	at := bits.OnesCount32(t.present&(1<<pos-1)) * HashSize
	return t.raw[at : at+HashSize : at+HashSize]
}

func (s *TiledLogStore) LogNode(level uint, index uint64) ([]byte, error) {
	id, pos := logTileOf(level, index)
	t, err := s.tile(id)
	if err != nil {
		return nil, err
	}
	if t.present&(1<<pos) == 0 {
		return nil, fmt.Errorf("kt: no log node at level %d index %d", level, index)
	}
	return t.hash(pos), nil
}

func (s *TiledLogStore) PutLogNode(level uint, index uint64, hash []byte) error {
	if len(hash) != HashSize {
		return fmt.Errorf("kt: log node hash of %d bytes", len(hash))
	}
	id, pos := logTileOf(level, index)
	t, err := s.tile(id)
	if err != nil {
		return err
	}
	if t.shared {
		t = &logTile{present: t.present, raw: t.raw}
		s.tiles[id] = t
	}
	if t.hashes == nil {
		hashes := new([logTilePositions][HashSize]byte)
		for p := range logTilePositions {
			if t.present&(1<<p) != 0 {
				hashes[p] = [HashSize]byte(t.hash(p))
			}
		}
		t.hashes, t.raw = hashes, nil
	}
	t.present |= 1 << pos
	t.hashes[pos] = [HashSize]byte(hash)
	t.dirty = true
	return nil
}

// Flush writes the tiles that changed.
func (s *TiledLogStore) Flush() error {
	for id, t := range s.tiles {
		if !t.dirty {
			continue
		}
		b := binary.BigEndian.AppendUint32(make([]byte, 0, 4+bits.OnesCount32(t.present)*HashSize+4), t.present)
		for p := range logTilePositions {
			if t.present&(1<<p) != 0 {
				b = append(b, t.hashes[p][:]...)
			}
		}
		if err := s.st.PutLogTile(id, b); err != nil {
			return err
		}
		t.dirty = false
	}
	return nil
}

// MemoryLogTileStore is a LogTileStore in memory, for tests.
type MemoryLogTileStore map[LogTileID][]byte

func (m MemoryLogTileStore) LogTile(id LogTileID) ([]byte, error) { return m[id], nil }

func (m MemoryLogTileStore) PutLogTile(id LogTileID, tile []byte) error {
	m[id] = tile
	return nil
}
