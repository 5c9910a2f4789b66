package group

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/internal/storetest"
)

// openTestStore opens group.db at path, closed when t ends.
var openTestStore = storetest.Opener(OpenBoltStore)

// TestBoltInvitationExpiryIndex: bbolt keeps invitations by expiry in an index of its
// own (invitation_expiry), one entry per invitation, and a file written before the
// index existed gets it built when opened. (What StaleInvitations answers is the
// conformance suite's, for both engines.)
func TestBoltInvitationExpiryIndex(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "group.db")
	s := openTestStore(t, path)
	now := time.Unix(1_800_000_000, 0)
	putInvitationsToExpire(t, s, now)
	checkStaleInvitations(t, "indexed as written", s, now)
	indexed := func() int {
		n := 0
		s.DB().View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketInviteExpiry).Stats().KeyN; return nil })
		return n
	}
	if n := indexed(); n != 3 {
		t.Errorf("%d expiry entries for 3 invitations", n)
	}

	// As a file from before the index: no index, no marker. Opening builds both.
	err := s.DB().Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketInviteExpiry); err != nil {
			return err
		}
		return tx.Bucket(bucketState).Delete(inviteExpiryKey)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTestStore(t, path)
	checkStaleInvitations(t, "rebuilt on open", s, now)
	if n := indexed(); n != 3 {
		t.Errorf("%d expiry entries rebuilt for 3 invitations", n)
	}
}
