package kt

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
)

// The map is a sparse Merkle tree over the 256 bits of a map key, the most significant
// bit of its first byte at the root (0: left, 1: right). It is the tree of depth 256
// with every empty subtree's hash fixed, in the compressed form that
// docs/key-transparency.md explains: a subtree that holds exactly one entry is that
// entry's leaf, wherever it sits, so a path is as deep as the keys around it need (about
// log2 of the number of entries), not 256 levels.
//
//	leaf:   SHA-256(0x00 ‖ key ‖ SHA-256(value))
//	node:   SHA-256(0x01 ‖ left ‖ right)
//	empty:  SHA-256(0x02)
//
// The three inputs differ in their first byte, so no hash of one kind can be presented
// as another, and a root determines the whole tree: a proof can lead to one outcome
// only for each key.

// MaxMapDepth is the deepest a map path can go: two keys that share 255 bits sit at
// depth 256.
const MaxMapDepth = 256

// EmptyMapHash is the hash of an empty subtree at any depth, and the root of the empty
// map: SHA-256(0x02).
var EmptyMapHash = sha256.Sum256([]byte{2})

// MapLeafHash is the hash of the entry key → value, given its value hash:
// SHA-256(0x00 ‖ key ‖ value hash).
func MapLeafHash(key, valueHash [HashSize]byte) [HashSize]byte {
	return mapHash(0, key, valueHash)
}

// MapNodeHash is the hash of an inner node: SHA-256(0x01 ‖ left ‖ right).
func MapNodeHash(left, right [HashSize]byte) [HashSize]byte { return mapHash(1, left, right) }

// mapHash is SHA-256(tag ‖ a ‖ b), the tag telling a leaf (0) from a node (1).
func mapHash(tag byte, a, b [HashSize]byte) [HashSize]byte {
	var in [1 + 2*HashSize]byte
	in[0] = tag
	copy(in[1:], a[:])
	copy(in[1+HashSize:], b[:])
	return sha256.Sum256(in[:])
}

// bit is bit i of key, from the most significant bit of key[0].
func bit(key *[HashSize]byte, i int) byte { return key[i/8] >> (7 - i%8) & 1 }

// MapNodeID names a position in the map: the first Depth bits of Prefix (the rest
// zero). The root is depth 0.
type MapNodeID struct {
	Depth  uint16
	Prefix [HashSize]byte
}

// mapNodeID is the position at depth on key's path.
func mapNodeID(key *[HashSize]byte, depth int) MapNodeID {
	id := MapNodeID{Depth: uint16(depth)}
	full := depth / 8
	copy(id.Prefix[:full], key[:full])
	if r := depth % 8; r != 0 {
		id.Prefix[full] = key[full] & (0xff << (8 - r))
	}
	return id
}

// child is id's child on side b (0 left, 1 right).
func (id MapNodeID) child(b byte) MapNodeID {
	c := MapNodeID{Depth: id.Depth + 1, Prefix: id.Prefix}
	if b == 1 {
		c.Prefix[id.Depth/8] |= 0x80 >> (id.Depth % 8)
	}
	return c
}

// MapNode is a stored position of the map: an inner node (its children's hashes) or an
// entry's leaf (its key and value hash). Empty positions are not stored. An inner node
// keeps its children's hashes, not its own, so that a proof reads only the nodes on
// its path (each gives the sibling of the next), and an update rehashes a node from
// the one child that changed and the other's hash it already holds.
type MapNode struct {
	Leaf bool
	// An inner node's children's hashes, EmptyMapHash for an empty child.
	Left, Right [HashSize]byte
	// A leaf's key and value hash.
	Key, ValueHash [HashSize]byte
}

// hash is the node's hash: an inner node's, or its leaf hash.
func (n *MapNode) hash() [HashSize]byte {
	if n.Leaf {
		return MapLeafHash(n.Key, n.ValueHash)
	}
	return MapNodeHash(n.Left, n.Right)
}

// newInner is an inner node whose children are both empty, until they are set.
func newInner() MapNode { return MapNode{Left: EmptyMapHash, Right: EmptyMapHash} }

// MapStore holds a map's nodes. MapNode returns false for an empty position.
type MapStore interface {
	MapNode(id MapNodeID) (MapNode, bool, error)
	PutMapNode(id MapNodeID, n MapNode) error
}

// MemoryMapStore is a MapStore in memory, for an auditor's recomputation and tests.
type MemoryMapStore map[MapNodeID]MapNode

func (m MemoryMapStore) MapNode(id MapNodeID) (MapNode, bool, error) {
	n, ok := m[id]
	return n, ok, nil
}

func (m MemoryMapStore) PutMapNode(id MapNodeID, n MapNode) error {
	m[id] = n
	return nil
}

// MapRoot returns the root hash of the map in st.
func MapRoot(st MapStore) ([HashSize]byte, error) {
	n, ok, err := st.MapNode(MapNodeID{})
	if err != nil || !ok {
		return EmptyMapHash, err
	}
	return n.hash(), nil
}

// MapEntry is one entry to set: key → the value whose hash is ValueHash.
type MapEntry struct {
	Key, ValueHash [HashSize]byte
}

// UpdateMap sets every entry in st (a later entry for a key wins) and returns the new
// root. It reads each path once, rehashes each changed inner node once, and writes
// each changed node once, so a batch costs far less than its entries one by one.
// Entries are never removed: an identity without a card keeps an entry saying so.
func UpdateMap(st MapStore, entries []MapEntry) ([HashSize]byte, error) {
	u := &mapUpdate{st: st, nodes: make(map[MapNodeID]*cachedNode, 16*len(entries))}
	for i := range entries {
		if err := u.set(&entries[i]); err != nil {
			return [HashSize]byte{}, err
		}
	}
	return u.flush()
}

type cachedNode struct {
	n       MapNode
	present bool
	// dirty: to be written; queued: an inner node queued for rehashing.
	dirty, queued bool
	// h is a dirty node's new hash, once computed.
	h      [HashSize]byte
	hashed bool
}

type mapUpdate struct {
	st    MapStore
	nodes map[MapNodeID]*cachedNode
	// chunk is where new cachedNodes are taken from, a few thousand at a time.
	chunk []cachedNode
	// inner are the inner nodes to rehash, by depth.
	inner [MaxMapDepth][]MapNodeID
}

func (u *mapUpdate) get(id MapNodeID) (*cachedNode, error) {
	if c, ok := u.nodes[id]; ok {
		return c, nil
	}
	n, ok, err := u.st.MapNode(id)
	if err != nil {
		return nil, err
	}
	c := u.alloc()
	c.n, c.present = n, ok
	u.nodes[id] = c
	return c, nil
}

// alloc returns a new cachedNode; a batch reads tens of thousands, and allocating them
// in chunks spares the garbage collector.
func (u *mapUpdate) alloc() *cachedNode {
	if len(u.chunk) == cap(u.chunk) {
		u.chunk = make([]cachedNode, 0, 4096)
	}
	u.chunk = u.chunk[:len(u.chunk)+1]
	return &u.chunk[len(u.chunk)-1]
}

// put writes n at id in the cache; an inner node is queued for rehashing.
func (u *mapUpdate) put(id MapNodeID, n MapNode) {
	c, ok := u.nodes[id]
	if !ok {
		c = u.alloc()
		u.nodes[id] = c
	}
	c.n, c.present, c.dirty = n, true, true
	if !n.Leaf {
		u.markInner(c, id)
	}
}

// markInner queues the inner node at id, which is on a changed path, for rehashing.
func (u *mapUpdate) markInner(c *cachedNode, id MapNodeID) {
	c.dirty = true
	if !c.queued {
		c.queued = true
		u.inner[id.Depth] = append(u.inner[id.Depth], id)
	}
}

func (u *mapUpdate) set(e *MapEntry) error {
	leaf := MapNode{Leaf: true, Key: e.Key, ValueHash: e.ValueHash}
	for depth := 0; depth <= MaxMapDepth; depth++ {
		id := mapNodeID(&e.Key, depth)
		c, err := u.get(id)
		if err != nil {
			return err
		}
		switch {
		case !c.present || (c.n.Leaf && c.n.Key == e.Key):
			u.put(id, leaf)
			return nil
		case c.n.Leaf:
			// Another entry sits here alone: both go down to where their keys part.
			other := c.n
			split := depth
			for bit(&e.Key, split) == bit(&other.Key, split) {
				split++
			}
			for d := depth; d <= split; d++ {
				u.put(mapNodeID(&e.Key, d), newInner())
			}
			u.put(mapNodeID(&other.Key, split+1), other)
			u.put(mapNodeID(&e.Key, split+1), leaf)
			return nil
		default:
			u.markInner(c, id)
		}
	}
	return fmt.Errorf("kt: map path of key %x deeper than %d", e.Key, MaxMapDepth)
}

// flush rehashes the changed inner nodes, deepest first, writes every changed node,
// and returns the root.
func (u *mapUpdate) flush() ([HashSize]byte, error) {
	for depth := MaxMapDepth - 1; depth >= 0; depth-- {
		if err := u.rehash(u.inner[depth]); err != nil {
			return [HashSize]byte{}, err
		}
	}
	dirty := make([]MapNodeID, 0, len(u.nodes))
	for id, c := range u.nodes {
		if c.dirty {
			dirty = append(dirty, id)
		}
	}
	// In key order, which a B+tree writes fastest.
	slices.SortFunc(dirty, func(a, b MapNodeID) int {
		if a.Depth != b.Depth {
			return int(a.Depth) - int(b.Depth)
		}
		return bytes.Compare(a.Prefix[:], b.Prefix[:])
	})
	for _, id := range dirty {
		if err := u.st.PutMapNode(id, u.nodes[id].n); err != nil {
			return [HashSize]byte{}, err
		}
	}
	return MapRoot(u.st)
}

// rehash sets, in the inner nodes ids, the hash of each child that changed (deeper
// nodes are rehashed first), and computes their own hashes. A child that did not
// change keeps the hash its parent holds: it is not read.
func (u *mapUpdate) rehash(ids []MapNodeID) error {
	for _, id := range ids {
		c := u.nodes[id]
		for side := range byte(2) {
			child, ok := u.nodes[id.child(side)]
			if !ok || !child.dirty {
				continue
			}
			if !child.hashed {
				child.h, child.hashed = child.n.hash(), true
			}
			if side == 0 {
				c.n.Left = child.h
			} else {
				c.n.Right = child.h
			}
		}
		c.h, c.hashed = c.n.hash(), true
	}
	return nil
}
