package kt

import "sync"

// TileCache keeps decoded tiles of the log and the map at one state of both: the state
// a published checkpoint commits to, which never changes afterwards. Every lookup made
// at that checkpoint reads the trees' top levels, which all paths share, from the cache
// instead of from the store, whichever transaction or batch it is in. A new checkpoint
// needs a new cache: the caller keys its cache by the checkpoint (its size and roots)
// and replaces it when a newer one is published, so that nothing needs invalidating.
//
// Only the tiles whose number is small whatever the size of the trees are kept: the
// map's tiles rooted above depth CacheMapDepth (at most 1 + 16 + 256 + 4,096) and the
// log's tiles of tile level 1 and above (one per 256 entries), up to MaxCachedTiles in
// all (about 1 KB each). The tiles below, one or two per identity, are read from the
// store. A TileCache is safe for concurrent use.
type TileCache struct {
	mu   sync.RWMutex
	maps map[MapTileID]*tile
	logs map[LogTileID]*logTile
}

// CacheMapDepth: the map's tiles rooted above this depth are cached.
const CacheMapDepth = 16

// MaxCachedTiles bounds a TileCache: about 16 MB of tiles at most.
const MaxCachedTiles = 1 << 14

// NewTileCache returns an empty cache.
func NewTileCache() *TileCache {
	return &TileCache{maps: map[MapTileID]*tile{}, logs: map[LogTileID]*logTile{}}
}

// tileTree is what a tiled store's reads need to know of the tiles of one tree, the
// map's (mapTree) or the log's (logTree).
type tileTree[K comparable, T any] struct {
	// caches says whether a TileCache keeps the tile id.
	caches func(id K) bool
	// in is the tiles of this tree that c keeps.
	in func(c *TileCache) map[K]*T
	// shared is the flag of t that says a TileCache keeps it, so it must not change
	// from now on (a store that writes to it writes to a copy).
	shared func(t *T) *bool
}

var (
	mapTree = tileTree[MapTileID, tile]{
		caches: func(id MapTileID) bool { return id.Depth < CacheMapDepth },
		in:     func(c *TileCache) map[MapTileID]*tile { return c.maps },
		shared: func(t *tile) *bool { return &t.shared },
	}
	logTree = tileTree[LogTileID, logTile]{
		caches: func(id LogTileID) bool { return id.Level >= 1 },
		in:     func(c *TileCache) map[LogTileID]*logTile { return c.logs },
		shared: func(t *logTile) *bool { return &t.shared },
	}
)

// tile is the tile id of a store that has read the tiles own and shares the cache c
// (nil for none): the one in own, else the one c keeps, else the one read gives. A tile
// the store did not have is put in own, and one read in c too where c keeps it.
func (tr tileTree[K, T]) tile(own map[K]*T, c *TileCache, id K, read func(K) (*T, error)) (*T, error) {
	if t, ok := own[id]; ok {
		return t, nil
	}
	cached := c != nil && tr.caches(id)
	if cached {
		if t := tr.get(c, id); t != nil {
			own[id] = t
			return t, nil
		}
	}
	t, err := read(id)
	if err != nil {
		return nil, err
	}
	own[id] = t
	if cached {
		tr.keep(c, id, t)
	}
	return t, nil
}

// get is the tile id that c keeps, or nil.
func (tr tileTree[K, T]) get(c *TileCache, id K) *T {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return tr.in(c)[id]
}

// keep puts t in c, unless c holds id already or is full, and then marks it shared: it
// must not change from now on.
func (tr tileTree[K, T]) keep(c *TileCache, id K, t *T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tiles := tr.in(c)
	if _, ok := tiles[id]; !ok && c.len() < MaxCachedTiles {
		*tr.shared(t) = true
		tiles[id] = t
	}
}

// HasMapTile says whether c (which may be nil) holds the map tile id, and whether that
// tile holds no node. A store that reads ahead skips the tiles c holds.
func (c *TileCache) HasMapTile(id MapTileID) (held, empty bool) {
	if c == nil {
		return false, false
	}
	t := mapTree.get(c, id)
	return t != nil, t != nil && t.present == 0
}

// HasLogTile says whether c (which may be nil) holds the log tile id.
func (c *TileCache) HasLogTile(id LogTileID) bool {
	return c != nil && logTree.get(c, id) != nil
}

// Len is the number of tiles the cache holds.
func (c *TileCache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.len()
}

// len is the number of tiles c holds; c.mu is held.
func (c *TileCache) len() int {
	return len(c.maps) + len(c.logs)
}
