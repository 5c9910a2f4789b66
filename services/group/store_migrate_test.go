package group

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/internal/storecopy/copytest"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

var migrateT0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// fillBolt writes every record kind of group.db through its transactions: two groups
// with members, a ban, a join request, invitations, epochs, statements, epoch keys, an
// upload with staged keys, a rotation due, an outbox whose first event was delivered,
// and the card cursor.
func fillBolt(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "group.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := timestamppb.New(migrateT0)
	err = s.Update(func(tx Tx) error {
		for _, g := range []string{"g_1", "g_2"} {
			must := func(err error) {
				if err != nil {
					t.Fatal(err)
				}
			}
			must(tx.PutGroup(&storagev1.GroupRecord{AppId: "app", GroupId: g, Owner: "u_a", Epoch: 2}))
			for i, id := range []string{"u_a", "u_b", "u_c"} {
				must(tx.PutMember("app", g, &storagev1.GroupMemberRecord{Identity: id, Role: uint32(i), JoinedAt: ts, Sequence: uint64(i)}))
				must(tx.PutStatement("app", g, &storagev1.GroupStatementRecord{Sequence: uint64(i), Hash: []byte{byte(i)}, StoredAt: ts}))
				for e := uint64(1); e <= 2; e++ {
					must(tx.PutEpochKey("app", g, id, &storagev1.GroupEpochKeyRecord{Epoch: e, SharedBy: "u_a", StoredAt: ts}))
				}
			}
			for e := uint64(0); e <= 2; e++ {
				must(tx.PutEpoch("app", g, &storagev1.GroupEpochRecord{Epoch: e, CommittedBy: "u_a", CommitHash: []byte{byte(e)}}))
			}
			must(tx.PutBan("app", g, &storagev1.GroupBanRecord{Identity: "u_x", BannedBy: "u_a", BannedAt: ts}))
			must(tx.PutJoinRequest("app", g, &storagev1.GroupJoinRequestRecord{Identity: "u_y", CreatedAt: ts, Sequence: 1}))
			must(tx.PutInvitation("app", &storagev1.GroupInvitationRecord{GroupId: g, Invitee: "u_z", Inviter: "u_a", CreatedAt: ts,
				ExpiresAt: timestamppb.New(migrateT0.Add(time.Hour))}))
			must(tx.PutUpload("app", g, &storagev1.GroupUploadRecord{UploadId: "up-" + g, Owner: "u_a", FromEpoch: 2, StagedCount: 2,
				ExpiresAt: timestamppb.New(migrateT0.Add(time.Minute))}))
			must(tx.PutStagedKey("up-"+g, &storagev1.GroupStagedKeyRecord{Identity: "u_b"}))
			must(tx.PutStagedKey("up-"+g, &storagev1.GroupStagedKeyRecord{Identity: "u_c"}))
			must(tx.SetRotationDue("app", g, time.Time{}, migrateT0.Add(24*time.Hour)))
			for i := 0; i < 2; i++ {
				must(tx.AppendOutbox(&storagev1.GroupOutboxRecord{AppId: "app", GroupId: g, EventId: fmt.Sprint(g, i), Recipients: []string{"u_a", "u_b"}, CreatedAt: ts}))
			}
		}
		if err := tx.DeleteOutbox(1); err != nil {
			return err
		}
		return tx.SetCardCursor(42)
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// dumpStore reads back what the service reads of the groups, through a Tx.
func dumpStore(t *testing.T, s Store) string {
	t.Helper()
	var out strings.Builder
	err := s.View(func(tx Tx) error {
		p := func(m ...any) { fmt.Fprintln(&out, m...) }
		for _, g := range []string{"g_1", "g_2"} {
			rec, err := tx.Group("app", g)
			p(rec, err)
			ms, err := tx.AllMembers("app", g)
			p(ms, err)
			bans, err := tx.Bans("app", g)
			p(bans, err)
			jr, err := tx.JoinRequests("app", g)
			p(jr, err)
			inv, err := tx.Invitations("app", g)
			p(inv, err)
			for e := uint64(0); e <= 2; e++ {
				ep, err := tx.Epoch("app", g, e)
				p(ep, err)
			}
			err = tx.Statements("app", g, 0, func(r *storagev1.GroupStatementRecord) (bool, error) { p(r); return true, nil })
			p(err)
			err = tx.EpochKeys("app", g, "u_b", 0, func(r *storagev1.GroupEpochKeyRecord) (bool, error) { p(r); return true, nil })
			p(err)
			up, err := tx.Upload("app", g, "u_a")
			p(up, err)
			sk, err := tx.StagedKeys("up-" + g)
			p(sk, err)
		}
		err := tx.MemberGroups("app", "u_b", "", func(g string) (bool, error) { p(g); return true, nil })
		p(err)
		ii, err := tx.InviteeInvitations("app", "u_z")
		p(ii, err)
		due, err := tx.DueGroups(migrateT0.Add(48*time.Hour), 10)
		p(due, err)
		exp, err := tx.ExpiredUploads(migrateT0.Add(time.Hour), 10)
		p(exp, err)
		stale, apps, err := tx.StaleInvitations(migrateT0.Add(2*time.Hour), 10)
		p(stale, apps, err)
		ob, err := tx.Outbox(10)
		p(ob, err)
		cur, err := tx.CardCursor()
		p(cur, err)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestCopyBoltToPostgres(t *testing.T) {
	path := fillBolt(t)
	pg := openPostgres(t, pgtest.NewDatabase(t).URL)
	res := copytest.Copy(t, BoltCopier(pg), path)
	for _, kind := range copyOrder {
		if res.Source[string(kind)].Count == 0 && string(kind) != "group_state" {
			t.Errorf("no %s copied", kind)
		}
	}
	if res.Source["group_state"].Count != 1 || res.Source["group_outbox.sequence"].Count != 1 {
		t.Errorf("the card cursor or the outbox's sequence was not copied: %v", copytest.Kinds(res))
	}
	src, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	want, got := dumpStore(t, src), dumpStore(t, pg)
	src.Close()
	if got != want {
		t.Fatalf("the copy reads\n%s\nthe file read\n%s", got, want)
	}
	// Writes go on: the next outbox event follows the file's last, the group's epoch
	// is the file's (a commit compares against it).
	err = pg.Update(func(tx Tx) error {
		g, err := tx.Group("app", "g_1")
		if err != nil || g.GetEpoch() != 2 {
			return fmt.Errorf("group g_1 at epoch %d (%v), want 2", g.GetEpoch(), err)
		}
		g.Epoch = 3
		if err := tx.PutGroup(g); err != nil {
			return err
		}
		return tx.AppendOutbox(&storagev1.GroupOutboxRecord{AppId: "app", GroupId: "g_1", EventId: "after"})
	})
	if err != nil {
		t.Fatal(err)
	}
	ob, err := pg.ClaimOutbox(10)
	if err != nil || len(ob) != 4 || ob[3].GetEventId() != "after" || ob[3].GetSequence() != 5 || !proto.Equal(ob[0], &storagev1.GroupOutboxRecord{
		Sequence: 2, AppId: "app", GroupId: "g_1", EventId: "g_11", Recipients: []string{"u_a", "u_b"}, CreatedAt: timestamppb.New(migrateT0)}) {
		t.Errorf("the outbox after the copy: %v %v", ob, err)
	}
	// Copying again over the changed schema is refused, naming what differs.
	_, err = BoltCopier(pg).Copy(context.Background(), path)
	copytest.WantDifferences(t, "copy over a changed schema", err, "groups", "group_outbox", "group_outbox.sequence")
}

func TestCopyInterruptedThenRerun(t *testing.T) {
	path := fillBolt(t)
	db := pgtest.NewDatabase(t)
	pg := openPostgres(t, db.URL)
	copytest.InterruptedThenRerun(t, db, BoltCopier(pg), path, "umbra_group.groups")
	// A member's row removed behind the copy's back: both the members and the index of
	// an identity's groups differ.
	db.Exec(t, "DELETE FROM umbra_group.members WHERE group_id = 'g_2' AND identity = 'u_c'")
	_, err := BoltCopier(pg).Verify(context.Background(), path)
	copytest.WantDifferences(t, "verify a copy missing a member", err, "members", "member_groups")
}
