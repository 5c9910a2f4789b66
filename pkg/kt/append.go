package kt

import (
	"fmt"

	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// MapValues holds each map key's current value: its exact MapValue bytes.
type MapValues interface {
	MapValue(key [HashSize]byte) ([]byte, bool, error)
	PutMapValue(key [HashSize]byte, value []byte) error
}

// State is where to find a log and its map: the log's nodes, the map's nodes, and the
// map's values.
type State struct {
	Log    LogStore
	Map    MapStore
	Values MapValues
}

// Append appends leaves (exact LogLeaf bytes, each checked) to the log of size
// entries, applies each to the map by NextMapValue, and returns the new log root and
// map root. The caller makes the whole of it one transaction.
func (s State) Append(size uint64, leaves [][]byte) (logRoot []byte, mapRoot [HashSize]byte, err error) {
	values := map[[HashSize]byte]*ktv1.MapValue{}
	var order [][HashSize]byte
	for i, b := range leaves {
		leaf, err := ParseLeaf(b)
		if err != nil {
			return nil, mapRoot, fmt.Errorf("log entry %d: %w", size+uint64(i), err)
		}
		key := [HashSize]byte(leaf.GetMapKey())
		prev, seen := values[key]
		if !seen {
			order = append(order, key)
			stored, ok, err := s.Values.MapValue(key)
			if err != nil {
				return nil, mapRoot, err
			}
			if ok {
				if prev, err = ParseMapValue(stored); err != nil {
					return nil, mapRoot, fmt.Errorf("stored map value of key %x: %w", key, err)
				}
			}
		}
		values[key] = NextMapValue(prev, leaf, size+uint64(i))
	}
	logRoot, err = AppendLog(s.Log, size, leaves)
	if err != nil {
		return nil, mapRoot, err
	}
	entries := make([]MapEntry, len(order))
	for i, key := range order {
		b, err := EncodeMapValue(values[key])
		if err != nil {
			return nil, mapRoot, err
		}
		if err := s.Values.PutMapValue(key, b); err != nil {
			return nil, mapRoot, err
		}
		entries[i] = MapEntry{Key: key, ValueHash: ValueHash(b)}
	}
	mapRoot, err = UpdateMap(s.Map, entries)
	return logRoot, mapRoot, err
}

// Prove returns the lookup proof of identity of app at the state's current size (the
// log's size, whose checkpoint commits to the map as it is).
func (s State) Prove(app, identity string, size uint64, leaf func(index uint64) ([]byte, error)) (*ktv1.LookupProof, error) {
	p, _, err := s.ProveValue(app, identity, size, leaf)
	return p, err
}

// ProveValue is Prove, and also returns the identity's map value, parsed (nil when the
// map has no entry for it).
func (s State) ProveValue(app, identity string, size uint64, leaf func(index uint64) ([]byte, error)) (*ktv1.LookupProof, *ktv1.MapValue, error) {
	key := MapKey(app, identity)
	mp, _, ok, err := ProveMap(s.Map, key)
	if err != nil {
		return nil, nil, err
	}
	p := &ktv1.LookupProof{Identity: identity, MapProof: mp}
	if !ok {
		return p, nil, nil
	}
	value, ok, err := s.Values.MapValue(key)
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, fmt.Errorf("kt: the map has an entry for key %x but no value is stored", key)
	}
	v, err := ParseMapValue(value)
	if err != nil {
		return nil, nil, fmt.Errorf("stored map value of key %x: %w", key, err)
	}
	p.MapValue, p.LeafIndex = value, v.GetCardLogIndex()
	if len(v.GetCardId()) == 0 {
		p.LeafIndex = v.GetLatestLogIndex()
	}
	if p.Leaf, err = leaf(p.LeafIndex); err != nil {
		return nil, nil, err
	}
	inclusion, err := InclusionProof(s.Log, p.LeafIndex, size)
	if err != nil {
		return nil, nil, err
	}
	p.InclusionHashes = PackHashes(inclusion)
	return p, v, nil
}

// Memory is a log and its map in memory: what an auditor recomputes from the log's
// entries, and what tests build.
type Memory struct {
	State
	Leaves [][]byte
}

// NewMemory returns an empty log and map in memory.
func NewMemory() *Memory {
	return &Memory{State: State{Log: MemoryLogStore{}, Map: MemoryMapStore{}, Values: memoryValues{}}}
}

type memoryValues map[[HashSize]byte][]byte

func (m memoryValues) MapValue(key [HashSize]byte) ([]byte, bool, error) {
	v, ok := m[key]
	return v, ok, nil
}

func (m memoryValues) PutMapValue(key [HashSize]byte, value []byte) error {
	m[key] = value
	return nil
}

// Append appends leaves and returns the checkpoint body of origin for the new state.
func (m *Memory) Append(origin string, leaves ...[]byte) (*Checkpoint, error) {
	logRoot, mapRoot, err := m.State.Append(uint64(len(m.Leaves)), leaves)
	if err != nil {
		return nil, err
	}
	m.Leaves = append(m.Leaves, leaves...)
	return &Checkpoint{Origin: origin, Size: uint64(len(m.Leaves)), LogRoot: [HashSize]byte(logRoot), MapRoot: mapRoot}, nil
}

// Prove returns the lookup proof of identity of app at the current size.
func (m *Memory) Prove(app, identity string) (*ktv1.LookupProof, error) {
	return m.State.Prove(app, identity, uint64(len(m.Leaves)), func(i uint64) ([]byte, error) { return m.Leaves[i], nil })
}
