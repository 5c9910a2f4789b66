package group

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

const (
	testApp    = "app_aaaaaaaaaaaaaaaaaaaaaaaaaa"
	testGroupA = "g_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	testGroupB = "g_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	testUser1  = "u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	testUser2  = "u_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func openTestStore(t *testing.T, path string) *BoltStore {
	t.Helper()
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStoreMembersAndKeys: a member's keys and index entry go with it, and other
// groups' records are untouched.
func TestStoreMembersAndKeys(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, filepath.Join(t.TempDir(), "group.db"))
	defer s.Close()
	key := func(epoch uint64) *storagev1.GroupEpochKeyRecord {
		return &storagev1.GroupEpochKeyRecord{Epoch: epoch, WrappedKey: &envelopev1.WrappedEpochKey{RecipientCardId: make([]byte, 32)}}
	}
	err := s.Update(func(tx Tx) error {
		for _, g := range []string{testGroupA, testGroupB} {
			for _, u := range []string{testUser1, testUser2} {
				if err := tx.PutMember(testApp, g, &storagev1.GroupMemberRecord{Identity: u}); err != nil {
					return err
				}
				for e := uint64(1); e <= 300; e++ { // epochs whose u64 holds a zero byte and not
					if err := tx.PutEpochKey(testApp, g, u, key(e)); err != nil {
						return err
					}
				}
			}
		}
		return tx.DeleteMember(testApp, testGroupA, testUser1)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(func(tx Tx) error {
		ms, err := tx.AllMembers(testApp, testGroupA)
		if err != nil || len(ms) != 1 || ms[0].GetIdentity() != testUser2 {
			t.Errorf("members of A: %v, %v", ms, err)
		}
		var groups []string
		tx.MemberGroups(testApp, testUser1, "", func(g string) (bool, error) { groups = append(groups, g); return true, nil })
		if !slices.Equal(groups, []string{testGroupB}) {
			t.Errorf("user 1's groups: %v", groups)
		}
		count := func(g, u string, after uint64) int {
			n := 0
			tx.EpochKeys(testApp, g, u, after, func(*storagev1.GroupEpochKeyRecord) (bool, error) { n++; return true, nil })
			return n
		}
		if n := count(testGroupA, testUser1, 0); n != 0 {
			t.Errorf("%d keys left of the removed member", n)
		}
		if n := count(testGroupA, testUser2, 0); n != 300 {
			t.Errorf("%d keys of the remaining member; want 300", n)
		}
		if n := count(testGroupB, testUser1, 255); n != 45 {
			t.Errorf("%d keys above epoch 255 in group B; want 45", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStoreDueAndOutbox: the rotation_due index in time order, the outbox in sequence
// order, and the card cursor survive a reopen.
func TestStoreDueAndOutbox(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "group.db")
	s := openTestStore(t, path)
	now := time.Now()
	err := s.Update(func(tx Tx) error {
		if err := tx.SetRotationDue(testApp, testGroupB, time.Time{}, now.Add(-time.Minute)); err != nil {
			return err
		}
		if err := tx.SetRotationDue(testApp, testGroupA, time.Time{}, now.Add(time.Hour)); err != nil {
			return err
		}
		// Moved: the old entry goes.
		if err := tx.SetRotationDue(testApp, testGroupA, now.Add(time.Hour), now.Add(-2*time.Minute)); err != nil {
			return err
		}
		for i := range 3 {
			if err := tx.AppendOutbox(&storagev1.GroupOutboxRecord{AppId: testApp, EventId: string(rune('a' + i)), CreatedAt: timestamppb.New(now)}); err != nil {
				return err
			}
		}
		return tx.SetCardCursor(42)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTestStore(t, path)
	defer s.Close()
	err = s.View(func(tx Tx) error {
		due, err := tx.DueGroups(now, 10)
		if err != nil || len(due) != 2 || due[0].Group != testGroupA || due[1].Group != testGroupB || due[0].App != testApp || !due[0].At.Equal(now.Add(-2*time.Minute)) {
			t.Errorf("due: %v, %v", due, err)
		}
		if later, _ := tx.DueGroups(now.Add(-90*time.Second), 10); len(later) != 1 {
			t.Errorf("due 90 s ago: %v", later)
		}
		recs, err := tx.Outbox(10)
		if err != nil || len(recs) != 3 || recs[0].GetEventId() != "a" || recs[2].GetSequence() != 3 {
			t.Errorf("outbox: %v, %v", recs, err)
		}
		if c, err := tx.CardCursor(); err != nil || c != 42 {
			t.Errorf("cursor %d, %v", c, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStaleInvitationsByExpiry: StaleInvitations reads the expiry index, oldest
// first; a renewal moves an invitation's entry and a deletion removes it; and a file
// written before the index existed gets it built when opened.
func TestStaleInvitationsByExpiry(t *testing.T) {
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
			if none, _, _ := tx.StaleInvitations(now.Add(2*time.Hour), 10); len(none) != 0 {
				t.Errorf("%s: %d invitations expired before 2 h; want none (the first expires at 2 h)", when, len(none))
			}
			if one, _, _ := tx.StaleInvitations(now.Add(5*time.Hour), 1); len(one) != 1 {
				t.Errorf("%s: limit 1 gave %d", when, len(one))
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
	defer s.Close()
	check("rebuilt on open")
	if n := indexed(); n != 3 {
		t.Errorf("%d expiry entries rebuilt for 3 invitations", n)
	}
}
