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
	mu    sync.RWMutex
	maps  map[MapTileID]*tile
	logs  map[LogTileID]*logTile
	count int
}

// CacheMapDepth: the map's tiles rooted above this depth are cached.
const CacheMapDepth = 16

// MaxCachedTiles bounds a TileCache: about 16 MB of tiles at most.
const MaxCachedTiles = 1 << 14

// NewTileCache returns an empty cache.
func NewTileCache() *TileCache {
	return &TileCache{maps: map[MapTileID]*tile{}, logs: map[LogTileID]*logTile{}}
}

func cachesMapTile(id MapTileID) bool { return id.Depth < CacheMapDepth }

func cachesLogTile(id LogTileID) bool { return id.Level >= 1 }

func (c *TileCache) mapTile(id MapTileID) *tile { return cached(c, c.maps, id) }

// putMapTile keeps t, which must not change from now on (a store that writes to it
// writes to a copy: see tile.shared).
func (c *TileCache) putMapTile(id MapTileID, t *tile) { keep(c, c.maps, id, t, &t.shared) }

func (c *TileCache) logTile(id LogTileID) *logTile { return cached(c, c.logs, id) }

func (c *TileCache) putLogTile(id LogTileID, t *logTile) { keep(c, c.logs, id, t, &t.shared) }

// cached is the tile id of one of c's trees, tiles, or nil.
func cached[K comparable, T any](c *TileCache, tiles map[K]*T, id K) *T {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return tiles[id]
}

// keep puts t in tiles, of one of c's trees, unless it holds id already or c is full,
// and then marks it shared: it must not change from now on.
func keep[K comparable, T any](c *TileCache, tiles map[K]*T, id K, t *T, shared *bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := tiles[id]; !ok && c.count < MaxCachedTiles {
		*shared = true
		tiles[id] = t
		c.count++
	}
}

// HasMapTile says whether c (which may be nil) holds the map tile id, and whether that
// tile holds no node. A store that reads ahead skips the tiles c holds.
func (c *TileCache) HasMapTile(id MapTileID) (held, empty bool) {
	if c == nil {
		return false, false
	}
	t := c.mapTile(id)
	return t != nil, t != nil && t.present == 0
}

// HasLogTile says whether c (which may be nil) holds the log tile id.
func (c *TileCache) HasLogTile(id LogTileID) bool {
	return c != nil && c.logTile(id) != nil
}

// Len is the number of tiles the cache holds.
func (c *TileCache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.count
}
