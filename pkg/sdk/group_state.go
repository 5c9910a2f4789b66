package sdk

import (
	"sync"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// What a Client remembers of each group: epoch keys, commit hashes, membership heads.

// groupStates is what a Client knows about its groups: the epoch keys it opened, the
// commit hashes that chain the epochs, and the verified membership chain. Its zero
// value is ready to use.
type groupStates struct {
	mu     sync.Mutex
	groups map[string]*groupState
}

type groupState struct {
	// chain is the verified membership chain (group_chain.go).
	chain *chainState
	// keys and commitHashes by epoch, of the commits this client verified or made;
	// vouched[e] is the hash of epoch e's commit as the verified commit of epoch e+1
	// names it.
	keys         map[uint64][]byte
	commitHashes map[uint64][]byte
	vouched      map[uint64][]byte
	// current is the latest epoch this client knows of; rotationRequired whether the
	// server said it must be replaced.
	current          uint64
	rotationRequired bool
	mode             groupv1.EncryptionMode
	// heads holds, by epoch, the membership head the epoch's verified commit names.
	heads map[uint64]e2ee.MembershipHead
}

// update runs f on groupID's state under the lock.
func (gs *groupStates) update(groupID string, f func(*groupState)) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.groups == nil {
		gs.groups = map[string]*groupState{}
	}
	s, ok := gs.groups[groupID]
	if !ok {
		s = &groupState{keys: map[uint64][]byte{}, commitHashes: map[uint64][]byte{}, vouched: map[uint64][]byte{}, heads: map[uint64]e2ee.MembershipHead{}}
		gs.groups[groupID] = s
	}
	f(s)
}

// accept records a verified commit: its hash, its membership head, and the
// predecessor it vouches for.
func (s *groupState) accept(c *e2ee.EpochCommit) {
	s.commitHashes[c.Epoch] = c.Hash
	s.heads[c.Epoch] = c.Membership
	if c.Epoch > 1 {
		s.vouched[c.Epoch-1] = c.PreviousCommitHash
	}
}

// forget drops the keys of a group the user left or deleted.
func (gs *groupStates) forget(groupID string) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	delete(gs.groups, groupID)
}

// head returns the membership head of a verified commit of groupID's epoch.
func (gs *groupStates) head(groupID string, epoch uint64) (e2ee.MembershipHead, bool) {
	var h e2ee.MembershipHead
	var ok bool
	gs.update(groupID, func(s *groupState) { h, ok = s.heads[epoch] })
	return h, ok
}

// key returns the client's key of an epoch, or nil.
func (gs *groupStates) key(groupID string, epoch uint64) []byte {
	var k []byte
	gs.update(groupID, func(s *groupState) { k = s.keys[epoch] })
	return k
}
