package kt

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// tiledState is a log and its map in tile stores in memory, as the card store keeps
// them, with the leaves.
type tiledState struct {
	logTiles MemoryLogTileStore
	mapTiles MemoryMapTileStore
	values   memoryValues
	leaves   [][]byte
}

// view is the state through new tiled stores that use cache (none when nil), as one
// read transaction sees it.
func (s *tiledState) view(cache *TileCache) (State, *TiledLogStore, *TiledMapStore) {
	l, m := NewTiledLogStore(s.logTiles), NewTiledMapStore(s.mapTiles)
	if cache != nil {
		l.UseCache(cache)
		m.UseCache(cache)
	}
	return State{Log: l, Map: m, Values: s.values}, l, m
}

func (s *tiledState) append(t *testing.T, leaves [][]byte) *Checkpoint {
	t.Helper()
	st, l, m := s.view(nil)
	logRoot, mapRoot, err := st.Append(uint64(len(s.leaves)), leaves)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	s.leaves = append(s.leaves, leaves...)
	return &Checkpoint{Origin: "test", Size: uint64(len(s.leaves)), LogRoot: [HashSize]byte(logRoot), MapRoot: mapRoot}
}

func (s *tiledState) prove(t *testing.T, st State, identity string) *ktv1.LookupProof {
	t.Helper()
	p, err := st.Prove(testApp, identity, uint64(len(s.leaves)), func(i uint64) ([]byte, error) { return s.leaves[i], nil })
	if err != nil {
		t.Fatalf("%s: %v", identity, err)
	}
	return p
}

func cacheIdentity(i int) string { return fmt.Sprintf("id-%d", i) }

// TestTileCacheGivesTheProofsOfItsState: lookups through a TileCache that other
// lookups of the same state filled give exactly the proofs read from the store, and
// they verify; a later state with a new cache does too.
func TestTileCacheGivesTheProofsOfItsState(t *testing.T) {
	s := &tiledState{logTiles: MemoryLogTileStore{}, mapTiles: MemoryMapTileStore{}, values: memoryValues{}}
	const n = 1500
	for round, size := range []int{1000, n} {
		var leaves [][]byte
		for i := len(s.leaves); i < size; i++ {
			leaves = append(leaves, leafBytes(t, cacheIdentity(i), ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, byte(i), 0, int64(i)+1))
		}
		cp := s.append(t, leaves)
		cache := NewTileCache()
		for pass := range 2 {
			// Each pass a new transaction's stores: the second reads the top tiles from
			// the cache only.
			cached, _, _ := s.view(cache)
			for i := 0; i < n+50; i += 7 {
				id := cacheIdentity(i)
				uncached, _, _ := s.view(nil)
				want, got := s.prove(t, uncached, id), s.prove(t, cached, id)
				if !proto.Equal(got, want) {
					t.Fatalf("round %d pass %d: %s: the proof through the cache differs from the store's", round, pass, id)
				}
				if _, err := VerifyLookup(cp, testApp, id, got); err != nil {
					t.Fatalf("round %d pass %d: %s: %v", round, pass, id, err)
				}
			}
		}
		if cache.Len() == 0 {
			t.Fatalf("round %d: nothing cached", round)
		}
	}
}

// TestTileCacheIsNotWrittenThrough: a store that writes a node of a cached tile
// writes to its own copy; the cache, which other readers share, keeps the tile of its
// state.
func TestTileCacheIsNotWrittenThrough(t *testing.T) {
	s := &tiledState{logTiles: MemoryLogTileStore{}, mapTiles: MemoryMapTileStore{}, values: memoryValues{}}
	var leaves [][]byte
	for i := range 300 {
		leaves = append(leaves, leafBytes(t, cacheIdentity(i), ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, byte(i), 0, int64(i)+1))
	}
	s.append(t, leaves)
	cache := NewTileCache()
	_, l, m := s.view(cache)
	root, ok, err := m.MapNode(MapNodeID{})
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	top, err := l.LogNode(4, 0)
	if err != nil {
		t.Fatal(err)
	}
	top = append([]byte(nil), top...)
	if cache.Len() != 2 {
		t.Fatalf("cache holds %d tiles, want the map's root tile and one log tile", cache.Len())
	}
	if err := m.PutMapNode(MapNodeID{}, MapNode{Left: EmptyMapHash, Right: EmptyMapHash}); err != nil {
		t.Fatal(err)
	}
	if err := l.PutLogNode(4, 0, make([]byte, HashSize)); err != nil {
		t.Fatal(err)
	}
	// The writer sees its writes…
	if n, _, _ := m.MapNode(MapNodeID{}); n == root {
		t.Fatal("the writer does not see its own map write")
	}
	if h, _ := l.LogNode(4, 0); string(h) == string(top) {
		t.Fatal("the writer does not see its own log write")
	}
	// …and a reader of the cache does not.
	_, l2, m2 := s.view(cache)
	if n, _, _ := m2.MapNode(MapNodeID{}); n != root {
		t.Fatal("a write changed the map tile in the cache")
	}
	if h, _ := l2.LogNode(4, 0); string(h) != string(top) {
		t.Fatal("a write changed the log tile in the cache")
	}
}
