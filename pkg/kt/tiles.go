package kt

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// MapTileHeight is how many levels of the map one stored tile holds. A path of the map
// of n entries crosses about log2(n)/4 tiles: 5 reads for a million entries instead of
// 20 nodes, and an update writes 5 tiles instead of 20 nodes.
const MapTileHeight = 4

// tilePositions is the number of node positions in a tile: 1 + 2 + 4 + 8.
const tilePositions = 1<<MapTileHeight - 1

// MapTileID names a tile: the subtree of MapTileHeight levels rooted at depth Depth (a
// multiple of MapTileHeight) under the first Depth bits of Prefix (the rest zero).
type MapTileID = MapNodeID

// MapTileStore holds a map's tiles as bytes. MapTile returns nil for a tile that holds
// nothing.
type MapTileStore interface {
	MapTile(id MapTileID) ([]byte, error)
	PutMapTile(id MapTileID, tile []byte) error
}

// TiledMapStore is a MapStore over a MapTileStore: it reads each tile once and keeps it,
// and writes the tiles that changed on Flush. It is meant for one transaction.
type TiledMapStore struct {
	st    MapTileStore
	tiles map[MapTileID]*tile
	// cache, when set, is shared with other readers of the same state (UseCache).
	cache *TileCache
	// last is the tile read last: a path's consecutive nodes are mostly in one tile.
	lastID MapTileID
	last   *tile
}

// NewTiledMapStore returns a MapStore over the tiles of st.
func NewTiledMapStore(st MapTileStore) *TiledMapStore {
	return &TiledMapStore{st: st, tiles: map[MapTileID]*tile{}}
}

// tile is a tile as read: its stored bytes, decoded one position at a time as they are
// read, and in full once it is written to.
type tile struct {
	present, leaf uint16
	// raw is the stored positions (64 bytes each, in order); nodes replaces it on the
	// first write.
	raw   []byte
	nodes *[tilePositions]MapNode
	dirty bool
	// shared: the tile is in a TileCache, so it never changes; a write goes to a copy.
	shared bool
}

// node returns the node at pos, which must be present.
func (t *tile) node(pos int) MapNode {
	if t.nodes != nil {
		return t.nodes[pos]
	}
	at := bits.OnesCount16(t.present&(1<<pos-1)) * 2 * HashSize
	a, c := [HashSize]byte(t.raw[at:at+HashSize]), [HashSize]byte(t.raw[at+HashSize:at+2*HashSize])
	if t.leaf&(1<<pos) != 0 {
		return MapNode{Leaf: true, Key: a, ValueHash: c}
	}
	return MapNode{Left: a, Right: c}
}

// writable decodes every position, for a write.
func (t *tile) writable() {
	if t.nodes != nil {
		return
	}
	nodes := new([tilePositions]MapNode)
	for pos := range tilePositions {
		if t.present&(1<<pos) != 0 {
			nodes[pos] = t.node(pos)
		}
	}
	t.nodes, t.raw = nodes, nil
}

// tileOf returns the tile that holds id and id's position in it: position
// 2^r - 1 + i for the node r levels below the tile's root, i-th from the left.
func tileOf(id MapNodeID) (MapTileID, int) {
	depth := int(id.Depth) &^ (MapTileHeight - 1)
	r := int(id.Depth) - depth
	t := mapNodeID(&id.Prefix, depth)
	i := 0
	for d := depth; d < int(id.Depth); d++ {
		i = i<<1 | int(bit(&id.Prefix, d))
	}
	return t, 1<<r - 1 + i
}

// UseCache makes s read the tiles c holds from c, and keep in c the tiles it reads
// that c keeps (TileCache). c must be the cache of the state that s reads: the caller
// keys caches by checkpoint. It is meant for reads; a write to a cached tile writes to
// a copy.
func (s *TiledMapStore) UseCache(c *TileCache) { s.cache = c }

func (s *TiledMapStore) tile(id MapTileID) (*tile, error) {
	if s.last != nil && s.lastID == id {
		return s.last, nil
	}
	t, err := mapTree.tile(s.tiles, s.cache, id, s.read)
	if err != nil {
		return nil, err
	}
	s.lastID, s.last = id, t
	return t, nil
}

// read reads and decodes the tile id from the store.
func (s *TiledMapStore) read(id MapTileID) (*tile, error) {
	b, err := s.st.MapTile(id)
	if err != nil {
		return nil, err
	}
	t := &tile{}
	if err := t.decode(b); err != nil {
		return nil, fmt.Errorf("kt: map tile at depth %d: %w", id.Depth, err)
	}
	return t, nil
}

func (s *TiledMapStore) MapNode(id MapNodeID) (MapNode, bool, error) {
	tid, pos := tileOf(id)
	t, err := s.tile(tid)
	if err != nil || t.present&(1<<pos) == 0 {
		return MapNode{}, false, err
	}
	return t.node(pos), true, nil
}

func (s *TiledMapStore) PutMapNode(id MapNodeID, n MapNode) error {
	tid, pos := tileOf(id)
	t, err := s.tile(tid)
	if err != nil {
		return err
	}
	if t.shared {
		t = &tile{present: t.present, leaf: t.leaf, raw: t.raw}
		s.tiles[tid], s.lastID, s.last = t, tid, t
	}
	t.writable()
	t.present |= 1 << pos
	if n.Leaf {
		t.leaf |= 1 << pos
	} else {
		t.leaf &^= 1 << pos
	}
	t.nodes[pos], t.dirty = n, true
	return nil
}

// Flush writes the tiles that changed.
func (s *TiledMapStore) Flush() error {
	for id, t := range s.tiles {
		if t.dirty {
			if err := s.st.PutMapTile(id, t.encode()); err != nil {
				return err
			}
			t.dirty = false
		}
	}
	return nil
}

// A tile's bytes: u16(present), u16(leaf), then for each present position in order,
// 64 bytes: an inner node's left and right hashes, or a leaf's key and value hash.
func (t *tile) encode() []byte {
	t.writable()
	b := make([]byte, 4, 4+bits.OnesCount16(t.present)*2*HashSize+4)
	binary.BigEndian.PutUint16(b, t.present)
	binary.BigEndian.PutUint16(b[2:], t.leaf)
	for pos := range tilePositions {
		if t.present&(1<<pos) == 0 {
			continue
		}
		n := &t.nodes[pos]
		if n.Leaf {
			b = append(append(b, n.Key[:]...), n.ValueHash[:]...)
		} else {
			b = append(append(b, n.Left[:]...), n.Right[:]...)
		}
	}
	return b
}

func (t *tile) decode(b []byte) error {
	if b == nil {
		return nil
	}
	if len(b) < 4 {
		return fmt.Errorf("%d bytes", len(b))
	}
	t.present, t.leaf = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
	if t.present>>tilePositions != 0 || t.leaf&^t.present != 0 || len(b) != 4+bits.OnesCount16(t.present)*2*HashSize {
		return fmt.Errorf("%d bytes for positions %015b (leaves %015b)", len(b), t.present, t.leaf)
	}
	// A copy: the stored bytes are the storage engine's, valid for its transaction only
	// as long as nothing is written.
	t.raw = append([]byte(nil), b[4:]...)
	return nil
}

// MemoryMapTileStore is a MapTileStore in memory, for tests.
type MemoryMapTileStore map[MapTileID][]byte

func (m MemoryMapTileStore) MapTile(id MapTileID) ([]byte, error) { return m[id], nil }

func (m MemoryMapTileStore) PutMapTile(id MapTileID, tile []byte) error {
	m[id] = tile
	return nil
}
