package group

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/storetest"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// The conformance suite: every behaviour of Store and Tx that the service relies on,
// run with the same code over each engine (TestBoltStore, TestPostgresStore), as SpiceDB
// runs one datastore suite over each of its datastores.

const (
	testApp    = "app_aaaaaaaaaaaaaaaaaaaaaaaaaa"
	testGroupA = "g_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	testGroupB = "g_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	testUser1  = "u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	testUser2  = "u_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// storeEngine opens stores of one engine for the suite.
type storeEngine struct {
	storetest.Engine[Store]
	// oneProcess says that the engine's storage has one process, which runs the only
	// delivery loop.
	oneProcess bool
}

func testStore(t *testing.T, e storeEngine) {
	storetest.Run(t, e, []storetest.Case[storeEngine]{
		{"RecordsRoundTrip", testRecordsRoundTrip},
		{"MembersAndKeys", testMembersAndKeys},
		{"ListsInKeyOrderAcrossPages", testListsInKeyOrder},
		{"InvitationsBansAndJoinRequests", testInvitationsBansJoinRequests},
		{"StaleInvitationsByExpiry", testStaleInvitations},
		{"Uploads", testUploads},
		{"DueAndOutboxAndCursor", testDueAndOutbox},
		{"DeleteGroupData", testDeleteGroupData},
		{"NothingHalfWritten", testNothingHalfWritten},
		{"BatchTakesOutAFailingCall", testBatchFailingCall},
		{"ConcurrentEpochCommitsOneWins", testConcurrentEpochCAS},
		{"ConcurrentStatementsDoNotFork", testConcurrentStatements},
		{"ConcurrentCreationsOneWins", testConcurrentCreations},
		{"ConcurrentChangesLoseNothing", testConcurrentCounters},
		{"OppositeLockOrdersBothCommit", testOppositeOrders},
		{"ConcurrentCardFollowersApplyOnce", testConcurrentCardCursor},
		{"ConcurrentSweepersMarkOnce", testConcurrentSweepers},
		{"ConcurrentDeliveriesPublishOnce", testConcurrentDeliveries},
	})
}

var boltEngine = storeEngine{
	Engine:     storetest.File[Store]("group.db", openTestStore),
	oneProcess: true,
}

func TestBoltStore(t *testing.T) { testStore(t, boltEngine) }

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 123456789, time.UTC)

func update(t *testing.T, s Store, fn func(Tx) error) {
	t.Helper()
	if err := s.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func view(t *testing.T, s Store, fn func(Tx) error) {
	t.Helper()
	if err := s.View(fn); err != nil {
		t.Fatal(err)
	}
}

func wrappedKey(b byte) *envelopev1.WrappedEpochKey {
	id := make([]byte, 32)
	id[0] = b
	return &envelopev1.WrappedEpochKey{RecipientCardId: id, Enc: []byte{b, 1}, Ciphertext: []byte{b, 2}}
}

// testRecordsRoundTrip: every record is read back exactly as written (nanoseconds
// included), from the same transaction and from another after a reopen, and what is
// missing reads as missing.
func testRecordsRoundTrip(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	g := &storagev1.GroupRecord{AppId: testApp, GroupId: testGroupA, Owner: testUser1, EncryptionMode: 2, RotationPeriod: durationpb.New(time.Hour),
		Epoch: 3, CommitHash: []byte{1, 2}, EpochStartedAt: timestamppb.New(t0), RotationReasons: []uint32{1, 3}, MembershipHash: []byte{0, 9}}
	member := &storagev1.GroupMemberRecord{Identity: testUser1, Role: 1, JoinedAt: timestamppb.New(t0), Sequence: 1, FirstEpoch: 1}
	ban := &storagev1.GroupBanRecord{Identity: testUser2, BannedBy: testUser1, BannedAt: timestamppb.New(t0)}
	jr := &storagev1.GroupJoinRequestRecord{Identity: testUser2, CreatedAt: timestamppb.New(t0), Sequence: 7}
	inv := &storagev1.GroupInvitationRecord{GroupId: testGroupA, Invitee: testUser2, Inviter: testUser1, CreatedAt: timestamppb.New(t0), ExpiresAt: timestamppb.New(t0.Add(time.Hour)), StatementHash: []byte{5}}
	epoch := &storagev1.GroupEpochRecord{Epoch: 3, Commit: &envelopev1.SignedEpochCommit{Content: []byte("c"), Signature: []byte("s")}, CommittedBy: testUser1, CommittedAt: timestamppb.New(t0), CommitHash: []byte{1, 2}}
	st := &storagev1.GroupStatementRecord{Sequence: 1, Statement: &envelopev1.SignedMembershipStatement{Content: []byte("st"), Signature: []byte("sig")}, Hash: []byte{0, 9}, StoredAt: timestamppb.New(t0)}
	key := &storagev1.GroupEpochKeyRecord{Epoch: 3, WrappedKey: wrappedKey(1), SharedBy: testUser2, StoredAt: timestamppb.New(t0)}
	up := &storagev1.GroupUploadRecord{UploadId: "upload1", Owner: testUser1, FromEpoch: 3, StagedCount: 1, ExpiresAt: timestamppb.New(t0)}
	staged := &storagev1.GroupStagedKeyRecord{Identity: testUser2, WrappedKey: wrappedKey(2)}
	write := func(tx Tx) error {
		for _, err := range []error{
			tx.PutGroup(g), tx.PutMember(testApp, testGroupA, member), tx.PutBan(testApp, testGroupA, ban), tx.PutJoinRequest(testApp, testGroupA, jr),
			tx.PutInvitation(testApp, inv), tx.PutEpoch(testApp, testGroupA, epoch), tx.PutStatement(testApp, testGroupA, st),
			tx.PutEpochKey(testApp, testGroupA, testUser1, key), tx.PutUpload(testApp, testGroupA, up), tx.PutStagedKey("upload1", staged),
		} {
			if err != nil {
				return err
			}
		}
		return nil
	}
	check := func(when string, tx Tx) {
		t.Helper()
		equal := func(what string, got proto.Message, err error, want proto.Message) {
			t.Helper()
			if err != nil || !proto.Equal(got, want) {
				t.Errorf("%s: %s = %v (%v), want %v", when, what, got, err, want)
			}
		}
		got, err := tx.Group(testApp, testGroupA)
		equal("Group", got, err, g)
		m, err := tx.Member(testApp, testGroupA, testUser1)
		equal("Member", m, err, member)
		b, err := tx.Ban(testApp, testGroupA, testUser2)
		equal("Ban", b, err, ban)
		r, err := tx.JoinRequest(testApp, testGroupA, testUser2)
		equal("JoinRequest", r, err, jr)
		i, err := tx.Invitation(testApp, testGroupA, testUser2)
		equal("Invitation", i, err, inv)
		ep, err := tx.Epoch(testApp, testGroupA, 3)
		equal("Epoch", ep, err, epoch)
		k, err := tx.EpochKey(testApp, testGroupA, testUser1, 3)
		equal("EpochKey", k, err, key)
		u, err := tx.Upload(testApp, testGroupA, testUser1)
		equal("Upload", u, err, up)
		sk, err := tx.StagedKey("upload1", testUser2)
		equal("StagedKey", sk, err, staged)
		var sts []*storagev1.GroupStatementRecord
		err = tx.Statements(testApp, testGroupA, 0, func(r *storagev1.GroupStatementRecord) (bool, error) { sts = append(sts, r); return true, nil })
		if err != nil || len(sts) != 1 || !proto.Equal(sts[0], st) {
			t.Errorf("%s: Statements = %v (%v)", when, sts, err)
		}
		if _, err := tx.Group(testApp, testGroupB); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("%s: Group of a missing group: %v, want ErrNotFound", when, err)
		}
		if _, err := tx.Group("app_other", testGroupA); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("%s: another app's group: %v, want ErrNotFound", when, err)
		}
		for what, f := range map[string]func() (proto.Message, error){
			"Member":      func() (proto.Message, error) { return tx.Member(testApp, testGroupA, testUser2) },
			"Ban":         func() (proto.Message, error) { return tx.Ban(testApp, testGroupA, testUser1) },
			"JoinRequest": func() (proto.Message, error) { return tx.JoinRequest(testApp, testGroupB, testUser2) },
			"Invitation":  func() (proto.Message, error) { return tx.Invitation(testApp, testGroupA, testUser1) },
			"Epoch":       func() (proto.Message, error) { return tx.Epoch(testApp, testGroupA, 4) },
			"EpochKey":    func() (proto.Message, error) { return tx.EpochKey(testApp, testGroupA, testUser2, 3) },
			"Upload":      func() (proto.Message, error) { return tx.Upload(testApp, testGroupA, testUser2) },
			"StagedKey":   func() (proto.Message, error) { return tx.StagedKey("upload1", testUser1) },
		} {
			if m, err := f(); err != nil || !isNil(m) {
				t.Errorf("%s: %s of a missing record = %v, %v; want nil", when, what, m, err)
			}
		}
	}
	update(t, s, func(tx Tx) error {
		if err := write(tx); err != nil {
			return err
		}
		check("in the writing transaction", tx)
		return nil
	})
	view(t, s, func(tx Tx) error { check("in a view", tx); return nil })
	s = reopen(t)
	view(t, s, func(tx Tx) error { check("after a reopen", tx); return nil })
	// Written again, a record is replaced.
	g.Epoch = 4
	update(t, s, func(tx Tx) error { return tx.PutGroup(g) })
	view(t, s, func(tx Tx) error {
		if got, err := tx.Group(testApp, testGroupA); err != nil || got.GetEpoch() != 4 {
			t.Errorf("the group written again: epoch %d, %v; want 4", got.GetEpoch(), err)
		}
		return nil
	})
}

// isNil reports whether m is a nil pointer in an interface.
func isNil(m proto.Message) bool { return m == nil || !m.ProtoReflect().IsValid() }

// testMembersAndKeys: a member's keys and index entry go with it, and other groups'
// records are untouched.
func testMembersAndKeys(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	key := func(epoch uint64) *storagev1.GroupEpochKeyRecord {
		return &storagev1.GroupEpochKeyRecord{Epoch: epoch, WrappedKey: &envelopev1.WrappedEpochKey{RecipientCardId: make([]byte, 32)}}
	}
	update(t, s, func(tx Tx) error {
		for _, g := range []string{testGroupA, testGroupB} {
			for _, u := range []string{testUser1, testUser2} {
				if err := tx.PutMember(testApp, g, &storagev1.GroupMemberRecord{Identity: u}); err != nil {
					return err
				}
				for e := uint64(1); e <= 300; e++ { // epochs whose u64 holds a zero byte and not; more than a page
					if err := tx.PutEpochKey(testApp, g, u, key(e)); err != nil {
						return err
					}
				}
			}
		}
		return tx.DeleteMember(testApp, testGroupA, testUser1)
	})
	view(t, s, func(tx Tx) error {
		ms, err := tx.AllMembers(testApp, testGroupA)
		if err != nil || len(ms) != 1 || ms[0].GetIdentity() != testUser2 {
			t.Errorf("members of A: %v, %v", ms, err)
		}
		var groups []string
		if err := tx.MemberGroups(testApp, testUser1, "", func(g string) (bool, error) { groups = append(groups, g); return true, nil }); err != nil {
			t.Error(err)
		}
		if !slices.Equal(groups, []string{testGroupB}) {
			t.Errorf("user 1's groups: %v", groups)
		}
		count := func(g, u string, after uint64) int {
			n := 0
			if err := tx.EpochKeys(testApp, g, u, after, func(*storagev1.GroupEpochKeyRecord) (bool, error) { n++; return true, nil }); err != nil {
				t.Error(err)
			}
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
}

// testListsInKeyOrder: Members, MemberGroups, Statements and EpochKeys call back in
// key order (ids compared as bytes), from after `after`, across many pages, and stop
// when told.
func testListsInKeyOrder(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	const n = 600
	var ids, groups []string
	for i := range n {
		// Upper and lower case and digits: byte order, not a locale's.
		ids = append(ids, fmt.Sprintf("u_%c%03d", "aB0z"[i%4], i))
		groups = append(groups, fmt.Sprintf("g_%c%03d", "aB0z"[i%4], i))
	}
	update(t, s, func(tx Tx) error {
		for i, id := range ids {
			if err := tx.PutMember(testApp, testGroupA, &storagev1.GroupMemberRecord{Identity: id, Sequence: uint64(i)}); err != nil {
				return err
			}
			if err := tx.PutMember(testApp, groups[i], &storagev1.GroupMemberRecord{Identity: testUser1}); err != nil {
				return err
			}
			if err := tx.PutStatement(testApp, testGroupA, &storagev1.GroupStatementRecord{Sequence: uint64(i + 1)}); err != nil {
				return err
			}
			if err := tx.PutEpochKey(testApp, testGroupA, testUser1, &storagev1.GroupEpochKeyRecord{Epoch: uint64(i + 1)}); err != nil {
				return err
			}
		}
		// Another app's and another group's records are not listed.
		if err := tx.PutMember("app_other", testGroupA, &storagev1.GroupMemberRecord{Identity: "u_zzz"}); err != nil {
			return err
		}
		if err := tx.PutMember(testApp, testGroupB, &storagev1.GroupMemberRecord{Identity: "u_zzz"}); err != nil {
			return err
		}
		return tx.PutMember("app_other", testGroupA, &storagev1.GroupMemberRecord{Identity: testUser1})
	})
	sortedIDs, sortedGroups := slices.Sorted(slices.Values(ids)), slices.Sorted(slices.Values(groups))
	check := func(tx Tx) {
		var got []string
		err := tx.Members(testApp, testGroupA, "", func(m *storagev1.GroupMemberRecord) (bool, error) {
			got = append(got, m.GetIdentity())
			return true, nil
		})
		if err != nil || !slices.Equal(got, sortedIDs) {
			t.Errorf("Members: %d identities (%v), want %d in byte order", len(got), err, n)
		}
		got = nil
		err = tx.Members(testApp, testGroupA, sortedIDs[99], func(m *storagev1.GroupMemberRecord) (bool, error) {
			got = append(got, m.GetIdentity())
			return len(got) < 400, nil
		})
		if err != nil || !slices.Equal(got, sortedIDs[100:500]) {
			t.Errorf("Members after the 100th, 400 of them: %d (%v)", len(got), err)
		}
		got = nil
		err = tx.MemberGroups(testApp, testUser1, sortedGroups[9], func(g string) (bool, error) { got = append(got, g); return true, nil })
		want := sortedGroups[10:]
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("MemberGroups after the 10th: %d groups (%v), want %d", len(got), err, len(want))
		}
		var seqs []uint64
		err = tx.Statements(testApp, testGroupA, 250, func(r *storagev1.GroupStatementRecord) (bool, error) {
			seqs = append(seqs, r.GetSequence())
			return len(seqs) < 300, nil
		})
		if err != nil || len(seqs) != 300 || seqs[0] != 251 || seqs[299] != 550 {
			t.Errorf("Statements after 250, 300 of them: %d from %v (%v)", len(seqs), seqs[:min(1, len(seqs))], err)
		}
		seqs = nil
		err = tx.EpochKeys(testApp, testGroupA, testUser1, 0, func(k *storagev1.GroupEpochKeyRecord) (bool, error) {
			seqs = append(seqs, k.GetEpoch())
			return true, nil
		})
		if err != nil || len(seqs) != n || !slices.IsSorted(seqs) {
			t.Errorf("EpochKeys: %d in order %t (%v), want %d", len(seqs), slices.IsSorted(seqs), err, n)
		}
		if err := tx.Statements(testApp, testGroupA, n, func(*storagev1.GroupStatementRecord) (bool, error) {
			t.Error("a statement after the last")
			return false, nil
		}); err != nil {
			t.Error(err)
		}
		stop := errors.New("stop")
		if err := tx.Members(testApp, testGroupA, "", func(*storagev1.GroupMemberRecord) (bool, error) { return true, stop }); err != stop {
			t.Errorf("Members with fn failing: %v, want its error", err)
		}
	}
	view(t, s, func(tx Tx) error { check(tx); return nil })
	update(t, s, func(tx Tx) error { check(tx); return nil })
}

// testInvitationsBansJoinRequests: the lists of a group in identity order, an
// invitee's invitations in group order, and deletions.
func testInvitationsBansJoinRequests(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	inv := func(group, invitee string) *storagev1.GroupInvitationRecord {
		return &storagev1.GroupInvitationRecord{GroupId: group, Invitee: invitee, Inviter: testUser1, ExpiresAt: timestamppb.New(t0)}
	}
	update(t, s, func(tx Tx) error {
		for _, err := range []error{
			tx.PutInvitation(testApp, inv(testGroupB, testUser2)), tx.PutInvitation(testApp, inv(testGroupA, testUser2)),
			tx.PutInvitation(testApp, inv(testGroupA, testUser1)), tx.PutInvitation("app_other", inv(testGroupA, testUser2)),
			tx.PutBan(testApp, testGroupA, &storagev1.GroupBanRecord{Identity: testUser2}), tx.PutBan(testApp, testGroupA, &storagev1.GroupBanRecord{Identity: testUser1}),
			tx.PutBan(testApp, testGroupB, &storagev1.GroupBanRecord{Identity: "u_other"}),
			tx.PutJoinRequest(testApp, testGroupA, &storagev1.GroupJoinRequestRecord{Identity: testUser2, Sequence: 1}),
			tx.PutJoinRequest(testApp, testGroupA, &storagev1.GroupJoinRequestRecord{Identity: testUser1, Sequence: 2}),
		} {
			if err != nil {
				return err
			}
		}
		return nil
	})
	invitees := func(recs []*storagev1.GroupInvitationRecord) []string {
		var out []string
		for _, r := range recs {
			out = append(out, r.GetGroupId()+" "+r.GetInvitee())
		}
		return out
	}
	check := func(when string, wantA, wantU2, wantBans []string, wantJR int) {
		t.Helper()
		view(t, s, func(tx Tx) error {
			invs, err := tx.Invitations(testApp, testGroupA)
			if got := invitees(invs); err != nil || !slices.Equal(got, wantA) {
				t.Errorf("%s: invitations of A %q (%v), want %q", when, got, err, wantA)
			}
			invs, err = tx.InviteeInvitations(testApp, testUser2)
			if got := invitees(invs); err != nil || !slices.Equal(got, wantU2) {
				t.Errorf("%s: invitations of user 2 %q (%v), want %q", when, got, err, wantU2)
			}
			bans, err := tx.Bans(testApp, testGroupA)
			if err != nil || !slices.Equal(bans, wantBans) {
				t.Errorf("%s: bans of A %q (%v), want %q", when, bans, err, wantBans)
			}
			jrs, err := tx.JoinRequests(testApp, testGroupA)
			if err != nil || len(jrs) != wantJR || wantJR == 2 && (jrs[0].GetIdentity() != testUser1 || jrs[1].GetIdentity() != testUser2) {
				t.Errorf("%s: join requests of A %v (%v), want %d in identity order", when, jrs, err, wantJR)
			}
			return nil
		})
	}
	check("written", []string{testGroupA + " " + testUser1, testGroupA + " " + testUser2}, []string{testGroupA + " " + testUser2, testGroupB + " " + testUser2},
		[]string{testUser1, testUser2}, 2)
	update(t, s, func(tx Tx) error {
		for _, err := range []error{
			tx.DeleteInvitation(testApp, testGroupA, testUser2), tx.DeleteBan(testApp, testGroupA, testUser1),
			tx.DeleteJoinRequest(testApp, testGroupA, testUser2), tx.DeleteJoinRequest(testApp, testGroupA, testUser1),
			tx.DeleteBan(testApp, testGroupA, "u_never"), tx.DeleteInvitation(testApp, testGroupA, "u_never"),
		} {
			if err != nil {
				return err
			}
		}
		return nil
	})
	check("deleted", []string{testGroupA + " " + testUser1}, []string{testGroupB + " " + testUser2}, []string{testUser2}, 0)
	view(t, s, func(tx Tx) error {
		if bans, err := tx.Bans(testApp, "g_none"); err != nil || len(bans) != 0 {
			t.Errorf("bans of a group without: %v, %v", bans, err)
		}
		return nil
	})
}

// testStaleInvitations: StaleInvitations lists invitations that expired before a time,
// oldest first, with their apps; a renewal moves an invitation's expiry and a deletion
// removes it.
func testStaleInvitations(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	now := time.Unix(1_800_000_000, 0)
	putInvitationsToExpire(t, s, now)
	checkStaleInvitations(t, "as written", s, now)
	checkStaleInvitations(t, "after a reopen", reopen(t), now)
}

// putInvitationsToExpire writes five invitations made at now (one then renewed, one
// deleted), of which two are stale 5 h later, the first at 2 h.
func putInvitationsToExpire(t *testing.T, s Store, now time.Time) {
	t.Helper()
	inv := func(group, invitee string, expires time.Duration) *storagev1.GroupInvitationRecord {
		return &storagev1.GroupInvitationRecord{GroupId: group, Invitee: invitee, Inviter: testUser1, CreatedAt: timestamppb.New(now), ExpiresAt: timestamppb.New(now.Add(expires))}
	}
	update(t, s, func(tx Tx) error {
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
}

// checkStaleInvitations checks what StaleInvitations lists of putInvitationsToExpire's
// invitations: the two stale 5 h after now, in expiry order; none at 2 h; one with a
// limit of 1.
func checkStaleInvitations(t *testing.T, when string, s Store, now time.Time) {
	t.Helper()
	view(t, s, func(tx Tx) error {
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
}

// testUploads: an upload's staged keys go with it; ExpiredUploads lists expired ones
// in key order up to a limit.
func testUploads(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	now := time.Unix(1_800_000_000, 0)
	up := func(owner, id string, expires time.Duration) *storagev1.GroupUploadRecord {
		return &storagev1.GroupUploadRecord{UploadId: id, Owner: owner, ExpiresAt: timestamppb.New(now.Add(expires))}
	}
	update(t, s, func(tx Tx) error {
		for _, err := range []error{
			tx.PutUpload(testApp, testGroupB, up(testUser1, "up_b1", -time.Minute)),
			tx.PutUpload(testApp, testGroupA, up(testUser2, "up_a2", 0)), // expires at now: expired
			tx.PutUpload(testApp, testGroupA, up(testUser1, "up_a1", time.Nanosecond)),
			tx.PutStagedKey("up_a2", &storagev1.GroupStagedKeyRecord{Identity: testUser2, WrappedKey: wrappedKey(2)}),
			tx.PutStagedKey("up_a2", &storagev1.GroupStagedKeyRecord{Identity: testUser1, WrappedKey: wrappedKey(1)}),
			tx.PutStagedKey("up_a1", &storagev1.GroupStagedKeyRecord{Identity: testUser1, WrappedKey: wrappedKey(3)}),
		} {
			if err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx Tx) error {
		exp, err := tx.ExpiredUploads(now, 10)
		want := [][3]string{{testApp, testGroupA, testUser2}, {testApp, testGroupB, testUser1}}
		if err != nil || !slices.Equal(exp, want) {
			t.Errorf("expired uploads %v (%v), want %v", exp, err, want)
		}
		if exp, _ := tx.ExpiredUploads(now, 1); len(exp) != 1 {
			t.Errorf("limit 1 gave %d", len(exp))
		}
		keys, err := tx.StagedKeys("up_a2")
		if err != nil || len(keys) != 2 || keys[0].GetIdentity() != testUser1 || keys[1].GetIdentity() != testUser2 {
			t.Errorf("staged keys %v (%v), want user 1's then user 2's", keys, err)
		}
		return nil
	})
	update(t, s, func(tx Tx) error {
		if err := tx.DeleteUpload(testApp, testGroupA, testUser2); err != nil {
			return err
		}
		return tx.DeleteUpload(testApp, testGroupA, "u_none") // none: nothing to do
	})
	view(t, s, func(tx Tx) error {
		if u, err := tx.Upload(testApp, testGroupA, testUser2); u != nil || err != nil {
			t.Errorf("deleted upload: %v, %v", u, err)
		}
		if keys, err := tx.StagedKeys("up_a2"); len(keys) != 0 || err != nil {
			t.Errorf("keys of the deleted upload: %v, %v", keys, err)
		}
		if keys, err := tx.StagedKeys("up_a1"); len(keys) != 1 || err != nil {
			t.Errorf("keys of another upload: %v, %v", keys, err)
		}
		return nil
	})
}

// testDueAndOutbox: the rotation_due index in time order, the outbox in sequence
// order, and the card cursor survive a reopen.
func testDueAndOutbox(t *testing.T, e storeEngine) {
	s, reopen := e.Open(t)
	now := time.Now()
	var wrote bool
	update(t, s, func(tx Tx) error {
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
		if tx.WroteEvents() {
			t.Error("WroteEvents before any event")
		}
		for i := range 3 {
			r := &storagev1.GroupOutboxRecord{AppId: testApp, EventId: string(rune('a' + i)), CreatedAt: timestamppb.New(now)}
			if err := tx.AppendOutbox(r); err != nil {
				return err
			}
			if r.GetSequence() == 0 {
				t.Error("AppendOutbox gave no sequence")
			}
		}
		wrote = tx.WroteEvents()
		return tx.SetCardCursor(42)
	})
	if !wrote {
		t.Error("WroteEvents after AppendOutbox: false")
	}
	s = reopen(t)
	view(t, s, func(tx Tx) error {
		due, err := tx.DueGroups(now, 10)
		if err != nil || len(due) != 2 || due[0].Group != testGroupA || due[1].Group != testGroupB || due[0].App != testApp || !due[0].At.Equal(now.Add(-2*time.Minute)) {
			t.Errorf("due: %v, %v", due, err)
		}
		if later, _ := tx.DueGroups(now.Add(-90*time.Second), 10); len(later) != 1 {
			t.Errorf("due 90 s ago: %v", later)
		}
		recs, err := tx.Outbox(10)
		if err != nil || len(recs) != 3 || recs[0].GetEventId() != "a" || recs[2].GetEventId() != "c" ||
			recs[0].GetSequence() >= recs[1].GetSequence() || recs[1].GetSequence() >= recs[2].GetSequence() {
			t.Errorf("outbox: %v, %v", recs, err)
		}
		if c, err := tx.CardCursor(); err != nil || c != 42 {
			t.Errorf("cursor %d, %v", c, err)
		}
		return nil
	})
	claimed, err := s.ClaimOutbox(2)
	if err != nil || len(claimed) != 2 || claimed[0].GetEventId() != "a" {
		t.Fatalf("ClaimOutbox(2): %v, %v", claimed, err)
	}
	update(t, s, func(tx Tx) error {
		if err := tx.DeleteOutbox(claimed[0].GetSequence()); err != nil {
			return err
		}
		return tx.SetRotationDue(testApp, testGroupB, now.Add(-time.Minute), time.Time{})
	})
	view(t, s, func(tx Tx) error {
		if recs, _ := tx.Outbox(10); len(recs) != 2 || recs[0].GetEventId() != "b" {
			t.Errorf("outbox after a delivery: %v", recs)
		}
		if due, _ := tx.DueGroups(now, 10); len(due) != 1 || due[0].Group != testGroupA {
			t.Errorf("due after one was removed: %v", due)
		}
		return nil
	})
}

// testDeleteGroupData: a group and everything kept for it go, but its outbox records
// and other groups' records stay.
func testDeleteGroupData(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	due := t0.Add(time.Hour)
	groupA := &storagev1.GroupRecord{AppId: testApp, GroupId: testGroupA, RotationDueAt: timestamppb.New(due)}
	fill := func(tx Tx, g string) error {
		for _, err := range []error{
			tx.PutGroup(&storagev1.GroupRecord{AppId: testApp, GroupId: g, RotationDueAt: timestamppb.New(due)}),
			tx.PutMember(testApp, g, &storagev1.GroupMemberRecord{Identity: testUser1}),
			tx.PutEpochKey(testApp, g, testUser1, &storagev1.GroupEpochKeyRecord{Epoch: 1}),
			tx.PutBan(testApp, g, &storagev1.GroupBanRecord{Identity: testUser2}),
			tx.PutJoinRequest(testApp, g, &storagev1.GroupJoinRequestRecord{Identity: "u_jr"}),
			tx.PutInvitation(testApp, &storagev1.GroupInvitationRecord{GroupId: g, Invitee: "u_inv", ExpiresAt: timestamppb.New(t0)}),
			tx.PutEpoch(testApp, g, &storagev1.GroupEpochRecord{Epoch: 1}),
			tx.PutStatement(testApp, g, &storagev1.GroupStatementRecord{Sequence: 1}),
			tx.PutUpload(testApp, g, &storagev1.GroupUploadRecord{UploadId: "up_" + g, Owner: testUser1, ExpiresAt: timestamppb.New(t0)}),
			tx.PutStagedKey("up_"+g, &storagev1.GroupStagedKeyRecord{Identity: testUser1}),
			tx.SetRotationDue(testApp, g, time.Time{}, due),
			tx.AppendOutbox(&storagev1.GroupOutboxRecord{AppId: testApp, GroupId: g, EventId: "ev_" + g}),
		} {
			if err != nil {
				return err
			}
		}
		return nil
	}
	update(t, s, func(tx Tx) error {
		if err := fill(tx, testGroupA); err != nil {
			return err
		}
		return fill(tx, testGroupB)
	})
	update(t, s, func(tx Tx) error {
		if err := tx.DeleteGroupData(groupA); err != nil {
			return err
		}
		if _, err := tx.Group(testApp, testGroupA); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("the deleted group in its transaction: %v", err)
		}
		return nil
	})
	view(t, s, func(tx Tx) error {
		type counts struct{ group, members, keys, bans, jrs, invs, epochs, statements, uploads, staged, due, memberGroups, inviteeInvs int }
		count := func(g string) counts {
			var c counts
			if _, err := tx.Group(testApp, g); err == nil {
				c.group = 1
			}
			ms, _ := tx.AllMembers(testApp, g)
			c.members = len(ms)
			_ = tx.EpochKeys(testApp, g, testUser1, 0, func(*storagev1.GroupEpochKeyRecord) (bool, error) { c.keys++; return true, nil })
			bans, _ := tx.Bans(testApp, g)
			c.bans = len(bans)
			jrs, _ := tx.JoinRequests(testApp, g)
			c.jrs = len(jrs)
			invs, _ := tx.Invitations(testApp, g)
			c.invs = len(invs)
			if ep, _ := tx.Epoch(testApp, g, 1); ep != nil {
				c.epochs = 1
			}
			_ = tx.Statements(testApp, g, 0, func(*storagev1.GroupStatementRecord) (bool, error) { c.statements++; return true, nil })
			if u, _ := tx.Upload(testApp, g, testUser1); u != nil {
				c.uploads = 1
			}
			staged, _ := tx.StagedKeys("up_" + g)
			c.staged = len(staged)
			dues, _ := tx.DueGroups(due, 10)
			for _, d := range dues {
				if d.Group == g {
					c.due++
				}
			}
			_ = tx.MemberGroups(testApp, testUser1, "", func(mg string) (bool, error) {
				if mg == g {
					c.memberGroups++
				}
				return true, nil
			})
			ii, _ := tx.InviteeInvitations(testApp, "u_inv")
			for _, inv := range ii {
				if inv.GetGroupId() == g {
					c.inviteeInvs++
				}
			}
			return c
		}
		if c := count(testGroupA); c != (counts{}) {
			t.Errorf("left of the deleted group: %+v", c)
		}
		if c := count(testGroupB); c != (counts{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}) {
			t.Errorf("the other group: %+v, want one of each", c)
		}
		if recs, err := tx.Outbox(10); err != nil || len(recs) != 2 {
			t.Errorf("outbox: %d records (%v); want both groups' (already addressed)", len(recs), err)
		}
		return nil
	})
}

// testNothingHalfWritten: a transaction whose fn fails leaves nothing of what it wrote.
func testNothingHalfWritten(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	refused := errs.Preconditionf("refused")
	err := s.Update(func(tx Tx) error {
		if err := tx.PutGroup(&storagev1.GroupRecord{AppId: testApp, GroupId: testGroupA}); err != nil {
			return err
		}
		if err := tx.PutMember(testApp, testGroupA, &storagev1.GroupMemberRecord{Identity: testUser1}); err != nil {
			return err
		}
		if err := tx.AppendOutbox(&storagev1.GroupOutboxRecord{AppId: testApp}); err != nil {
			return err
		}
		return refused
	})
	if !errors.Is(err, refused) {
		t.Errorf("Update: %v, want fn's error", err)
	}
	view(t, s, func(tx Tx) error {
		if _, err := tx.Group(testApp, testGroupA); !errors.Is(err, errs.ErrNotFound) {
			t.Errorf("group of the failed transaction: %v", err)
		}
		if m, _ := tx.Member(testApp, testGroupA, testUser1); m != nil {
			t.Errorf("member of the failed transaction: %v", m)
		}
		if recs, _ := tx.Outbox(10); len(recs) != 0 {
			t.Errorf("outbox of the failed transaction: %v", recs)
		}
		return nil
	})
}

// testBatchFailingCall: of concurrent Batch calls, one that fails gets its error and
// leaves nothing; the others commit.
func testBatchFailingCall(t *testing.T, e storeEngine) {
	s, _ := e.Open(t)
	const n = 20
	refused := errs.Preconditionf("refused")
	var wg sync.WaitGroup
	errc := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errc[i] = s.Batch(func(tx Tx) error {
				g := fmt.Sprintf("g_batch%02d", i)
				if err := tx.PutGroup(&storagev1.GroupRecord{AppId: testApp, GroupId: g}); err != nil {
					return err
				}
				if i == 7 {
					return refused
				}
				return nil
			})
		})
	}
	wg.Wait()
	view(t, s, func(tx Tx) error {
		for i := range n {
			_, err := tx.Group(testApp, fmt.Sprintf("g_batch%02d", i))
			switch {
			case i == 7 && (!errors.Is(errc[i], refused) || !errors.Is(err, errs.ErrNotFound)):
				t.Errorf("the failing call: %v, its group: %v; want its error and no group", errc[i], err)
			case i != 7 && (errc[i] != nil || err != nil):
				t.Errorf("call %d: %v, its group: %v", i, errc[i], err)
			}
		}
		return nil
	})
}

// rendezvous holds transactions that each arrive once until all have arrived or wait
// has passed. Between transactions that exclude each other only the first arrives
// before the wait: the others start once it has committed.
type rendezvous struct {
	n    int
	mu   sync.Mutex
	in   int
	all  chan struct{}
	wait time.Duration
}

func newRendezvous(n int, wait time.Duration) *rendezvous {
	return &rendezvous{n: n, all: make(chan struct{}), wait: wait}
}

// arrive reports whether all arrived in time.
func (r *rendezvous) arrive() bool {
	r.mu.Lock()
	if r.in++; r.in == r.n {
		close(r.all)
	}
	r.mu.Unlock()
	select {
	case <-r.all:
		return true
	case <-time.After(r.wait):
		return false
	}
}

// updateAtOnce runs an Update on each replica at once, fn given the replica's index and
// the rendezvous all of them meet at (300 ms), and returns each Update's error.
func updateAtOnce(rs []Store, fn func(i int, meet *rendezvous, tx Tx) error) []error {
	meet := newRendezvous(len(rs), 300*time.Millisecond)
	errc := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, s := range rs {
		wg.Go(func() { errc[i] = s.Update(func(tx Tx) error { return fn(i, meet, tx) }) })
	}
	wg.Wait()
	return errc
}
