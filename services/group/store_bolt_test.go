package group

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/storetest"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// openTestStore opens group.db at path, closed when t ends.
func openTestStore(t testing.TB, path string) *BoltStore {
	t.Helper()
	return storetest.Open(t, func() (*BoltStore, error) { return OpenBoltStore(path) })
}

// TestBoltInvitationExpiryIndex: bbolt keeps invitations by expiry in an index of its
// own (invitation_expiry), one entry per invitation, and a file written before the
// index existed gets it built when opened. (What StaleInvitations answers is the
// conformance suite's, for both engines.)
func TestBoltInvitationExpiryIndex(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "group.db")
	s := openTestStore(t, path)
	now := time.Unix(1_800_000_000, 0)
	inv := func(group, invitee string, expires time.Duration) *storagev1.GroupInvitationRecord {
		return &storagev1.GroupInvitationRecord{GroupId: group, Invitee: invitee, Inviter: testUser1, CreatedAt: timestamppb.New(now), ExpiresAt: timestamppb.New(now.Add(expires))}
	}
	err := s.Update(func(tx Tx) error {
		for _, r := range []*storagev1.GroupInvitationRecord{
			inv(testGroupA, testUser2, time.Hour),     // renewed below to 4 h
			inv(testGroupB, testUser2, 2*time.Hour),   // stays
			inv(testGroupB, testUser1, 3*time.Hour),   // deleted below
			inv(testGroupA, testUser2, 4*time.Hour),   // the renewal
			inv(testGroupA, testUser1, 100*time.Hour), // not stale
		} {
			if err := tx.PutInvitation(testApp, r); err != nil {
				return err
			}
		}
		return tx.DeleteInvitation(testApp, testGroupB, testUser1)
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		err := s.View(func(tx Tx) error {
			stale, apps, err := tx.StaleInvitations(now.Add(5*time.Hour), 10)
			if err != nil {
				return err
			}
			var got []string
			for i, r := range stale {
				got = append(got, apps[i]+" "+r.GetGroupId()+" "+r.GetInvitee())
			}
			want := []string{testApp + " " + testGroupB + " " + testUser2, testApp + " " + testGroupA + " " + testUser2}
			if !slices.Equal(got, want) {
				t.Errorf("%s: stale invitations %q, want %q", when, got, want)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	check("indexed as written")
	indexed := func() int {
		n := 0
		s.DB().View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketInviteExpiry).Stats().KeyN; return nil })
		return n
	}
	if n := indexed(); n != 3 {
		t.Errorf("%d expiry entries for 3 invitations", n)
	}

	// As a file from before the index: no index, no marker. Opening builds both.
	err = s.DB().Update(func(tx *bolt.Tx) error {
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
	check("rebuilt on open")
	if n := indexed(); n != 3 {
		t.Errorf("%d expiry entries rebuilt for 3 invitations", n)
	}
}
