package kt

import (
	"crypto/sha256"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// The log is an RFC 9162 (RFC 6962) Merkle tree of LogLeaf bytes: leaf hash
// SHA-256(0x00 ‖ leaf), node hash SHA-256(0x01 ‖ left ‖ right), built and proved with
// github.com/transparency-dev/merkle. A store keeps the hash of every node that roots a
// perfect subtree (level 0 are the leaf hashes), which is all any proof needs: the
// one node a proof may need that is not perfect is rehashed from its perfect children.

// hasher is RFC 6962's hasher with SHA-256.
var hasher = rfc6962.DefaultHasher

// EmptyLogRoot is the root of the empty log: SHA-256 of nothing.
var EmptyLogRoot = sha256.Sum256(nil)

var rangeFactory = &compact.RangeFactory{Hash: hasher.HashChildren}

// LogStore holds a log's perfect-subtree node hashes.
type LogStore interface {
	// LogNode returns the hash of the node at level and index; it is an error if the
	// store has none.
	LogNode(level uint, index uint64) ([]byte, error)
	PutLogNode(level uint, index uint64, hash []byte) error
}

// MemoryLogStore is a LogStore in memory, for an auditor's recomputation and tests.
type MemoryLogStore map[compact.NodeID][]byte

func (m MemoryLogStore) LogNode(level uint, index uint64) ([]byte, error) {
	h, ok := m[compact.NewNodeID(level, index)]
	if !ok {
		return nil, fmt.Errorf("kt: no log node at level %d index %d", level, index)
	}
	return h, nil
}

func (m MemoryLogStore) PutLogNode(level uint, index uint64, hash []byte) error {
	m[compact.NewNodeID(level, index)] = hash
	return nil
}

// logRange loads the compact range [0, size) of the log in st.
func logRange(st LogStore, size uint64) (*compact.Range, error) {
	ids := compact.RangeNodes(0, size, nil)
	hashes := make([][]byte, len(ids))
	for i, id := range ids {
		h, err := st.LogNode(id.Level, id.Index)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	return rangeFactory.NewRange(0, size, hashes)
}

// AppendLog appends the leaves (exact LogLeaf bytes) to the log of size entries in st,
// stores the new nodes, and returns the new root.
func AppendLog(st LogStore, size uint64, leaves [][]byte) ([]byte, error) {
	r, err := logRange(st, size)
	if err != nil {
		return nil, err
	}
	var putErr error
	visit := func(id compact.NodeID, hash []byte) {
		if putErr == nil {
			putErr = st.PutLogNode(id.Level, id.Index, hash)
		}
	}
	for _, leaf := range leaves {
		if err := r.Append(LeafHash(leaf), visit); err != nil {
			return nil, err
		}
	}
	if putErr != nil {
		return nil, putErr
	}
	return rootOf(r)
}

// LogRoot returns the root of the first size entries of the log in st.
func LogRoot(st LogStore, size uint64) ([]byte, error) {
	r, err := logRange(st, size)
	if err != nil {
		return nil, err
	}
	return rootOf(r)
}

func rootOf(r *compact.Range) ([]byte, error) {
	if r.End() == 0 {
		return EmptyLogRoot[:], nil
	}
	return r.GetRootHash(nil)
}

// InclusionProof returns the proof that entry index is in the log of size entries.
func InclusionProof(st LogStore, index, size uint64) ([][]byte, error) {
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	return fetchProof(st, nodes)
}

// ConsistencyProof returns the proof that the log of size1 entries is a prefix of the
// log of size2 entries.
func ConsistencyProof(st LogStore, size1, size2 uint64) ([][]byte, error) {
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, err
	}
	return fetchProof(st, nodes)
}

func fetchProof(st LogStore, nodes proof.Nodes) ([][]byte, error) {
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		h, err := st.LogNode(id.Level, id.Index)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	return nodes.Rehash(hashes, hasher.HashChildren)
}
