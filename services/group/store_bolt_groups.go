// The bbolt engine's groups, members, bans, join requests and invitations.

package group

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

func (t *boltTx) Group(app, group string) (*storagev1.GroupRecord, error) {
	g := &storagev1.GroupRecord{}
	if err := boltdb.GetProto(t.b(bucketGroups), groupKey(app, group), g); err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return nil, errs.NotFoundf("group %s not found", group)
		}
		return nil, err
	}
	return g, nil
}

func (t *boltTx) PutGroup(g *storagev1.GroupRecord) error {
	return boltdb.PutProto(t.b(bucketGroups), groupKey(g.GetAppId(), g.GetGroupId()), g)
}

func (t *boltTx) Member(app, group, identity string) (*storagev1.GroupMemberRecord, error) {
	return boltdb.GetOptional(t.b(bucketMembers), memberKey(app, group, identity), &storagev1.GroupMemberRecord{})
}

func (t *boltTx) PutMember(app, group string, m *storagev1.GroupMemberRecord) error {
	if err := boltdb.PutProto(t.b(bucketMembers), memberKey(app, group, m.GetIdentity()), m); err != nil {
		return err
	}
	return t.b(bucketMemberGroups).Put(boltdb.Key(app, m.GetIdentity(), group), nil)
}

func (t *boltTx) DeleteMember(app, group, identity string) error {
	if err := t.b(bucketMembers).Delete(memberKey(app, group, identity)); err != nil {
		return err
	}
	if err := t.b(bucketMemberGroups).Delete(boltdb.Key(app, identity, group)); err != nil {
		return err
	}
	return deletePrefix(t.b(bucketEpochKeys), boltdb.Key(app, group, identity, ""))
}

func newMember() *storagev1.GroupMemberRecord { return &storagev1.GroupMemberRecord{} }

func (t *boltTx) Members(app, group, after string, fn func(*storagev1.GroupMemberRecord) (bool, error)) error {
	prefix := groupPrefix(app, group)
	start := prefix
	if after != "" {
		start = append(memberKey(app, group, after), 0)
	}
	return scanPrefix(t.b(bucketMembers), prefix, start, newMember, fn)
}

func (t *boltTx) AllMembers(app, group string) ([]*storagev1.GroupMemberRecord, error) {
	return listPrefix(t.b(bucketMembers), groupPrefix(app, group), newMember)
}

func (t *boltTx) MemberGroups(app, identity, after string, fn func(group string) (bool, error)) error {
	return scanIndex(t.b(bucketMemberGroups), boltdb.Key(app, identity, ""), after, fn)
}

func (t *boltTx) Ban(app, group, identity string) (*storagev1.GroupBanRecord, error) {
	return boltdb.GetOptional(t.b(bucketBans), memberKey(app, group, identity), &storagev1.GroupBanRecord{})
}

func (t *boltTx) PutBan(app, group string, b *storagev1.GroupBanRecord) error {
	return boltdb.PutProto(t.b(bucketBans), memberKey(app, group, b.GetIdentity()), b)
}

func (t *boltTx) DeleteBan(app, group, identity string) error {
	return t.b(bucketBans).Delete(memberKey(app, group, identity))
}

func (t *boltTx) Bans(app, group string) ([]string, error) {
	var out []string
	prefix := groupPrefix(app, group)
	c := t.b(bucketBans).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out, nil
}

func (t *boltTx) JoinRequest(app, group, identity string) (*storagev1.GroupJoinRequestRecord, error) {
	return boltdb.GetOptional(t.b(bucketJoinRequests), memberKey(app, group, identity), &storagev1.GroupJoinRequestRecord{})
}

func (t *boltTx) PutJoinRequest(app, group string, r *storagev1.GroupJoinRequestRecord) error {
	return boltdb.PutProto(t.b(bucketJoinRequests), memberKey(app, group, r.GetIdentity()), r)
}

func (t *boltTx) DeleteJoinRequest(app, group, identity string) error {
	return t.b(bucketJoinRequests).Delete(memberKey(app, group, identity))
}

func (t *boltTx) JoinRequests(app, group string) ([]*storagev1.GroupJoinRequestRecord, error) {
	return listPrefix(t.b(bucketJoinRequests), groupPrefix(app, group), func() *storagev1.GroupJoinRequestRecord { return &storagev1.GroupJoinRequestRecord{} })
}

func (t *boltTx) Invitation(app, group, invitee string) (*storagev1.GroupInvitationRecord, error) {
	return boltdb.GetOptional(t.b(bucketInvitations), memberKey(app, group, invitee), &storagev1.GroupInvitationRecord{})
}

func (t *boltTx) PutInvitation(app string, inv *storagev1.GroupInvitationRecord) error {
	k := memberKey(app, inv.GetGroupId(), inv.GetInvitee())
	if err := t.unindexInvitation(k); err != nil { // a renewal replaces its expiry
		return err
	}
	if err := boltdb.PutProto(t.b(bucketInvitations), k, inv); err != nil {
		return err
	}
	if err := t.b(bucketInviteExpiry).Put(inviteExpiryEntry(inv.GetExpiresAt().AsTime(), k), nil); err != nil {
		return err
	}
	return t.b(bucketInviteeGroups).Put(boltdb.Key(app, inv.GetInvitee(), inv.GetGroupId()), nil)
}

func (t *boltTx) DeleteInvitation(app, group, invitee string) error {
	k := memberKey(app, group, invitee)
	if err := t.unindexInvitation(k); err != nil {
		return err
	}
	if err := t.b(bucketInvitations).Delete(k); err != nil {
		return err
	}
	return t.b(bucketInviteeGroups).Delete(boltdb.Key(app, invitee, group))
}

// unindexInvitation deletes the expiry entry of the invitation stored under k, if any.
func (t *boltTx) unindexInvitation(k []byte) error {
	v := t.b(bucketInvitations).Get(k)
	if v == nil {
		return nil
	}
	old := &storagev1.GroupInvitationRecord{}
	if err := boltdb.DecodeProto(t.b(bucketInvitations), k, v, old); err != nil {
		return fmt.Errorf("invitation %q: %w", k, err)
	}
	return t.b(bucketInviteExpiry).Delete(inviteExpiryEntry(old.GetExpiresAt().AsTime(), k))
}

// inviteExpiryEntry is u64(unix ns of the expiry) followed by the invitation's key.
func inviteExpiryEntry(at time.Time, key []byte) []byte {
	return append(boltdb.U64(uint64(at.UnixNano())), key...)
}

func (t *boltTx) Invitations(app, group string) ([]*storagev1.GroupInvitationRecord, error) {
	return listPrefix(t.b(bucketInvitations), groupPrefix(app, group), func() *storagev1.GroupInvitationRecord { return &storagev1.GroupInvitationRecord{} })
}

func (t *boltTx) InviteeInvitations(app, invitee string) ([]*storagev1.GroupInvitationRecord, error) {
	var out []*storagev1.GroupInvitationRecord
	err := scanIndex(t.b(bucketInviteeGroups), boltdb.Key(app, invitee, ""), "", func(group string) (bool, error) {
		inv, err := t.Invitation(app, group, invitee)
		if err != nil {
			return false, err
		}
		if inv != nil {
			out = append(out, inv)
		}
		return true, nil
	})
	return out, err
}

func (t *boltTx) StaleInvitations(before time.Time, limit int) ([]*storagev1.GroupInvitationRecord, []string, error) {
	var out []*storagev1.GroupInvitationRecord
	var apps []string
	end := boltdb.U64(uint64(before.UnixNano()))
	c := t.b(bucketInviteExpiry).Cursor()
	for k, _ := c.First(); k != nil && len(out) < limit && bytes.Compare(k[:8], end) < 0; k, _ = c.Next() {
		key := k[8:]
		inv := &storagev1.GroupInvitationRecord{}
		if err := boltdb.GetProto(t.b(bucketInvitations), key, inv); err != nil {
			return nil, nil, fmt.Errorf("invitation %q of the expiry index: %w", key, err)
		}
		out = append(out, inv)
		apps = append(apps, string(key[:bytes.IndexByte(key, 0)]))
	}
	return out, apps, nil
}

func (t *boltTx) DeleteGroupData(g *storagev1.GroupRecord) error {
	app, group := g.GetAppId(), g.GetGroupId()
	members, err := t.AllMembers(app, group)
	if err != nil {
		return err
	}
	for _, m := range members {
		if err := t.DeleteMember(app, group, m.GetIdentity()); err != nil {
			return err
		}
	}
	invs, err := t.Invitations(app, group)
	if err != nil {
		return err
	}
	for _, inv := range invs {
		if err := t.DeleteInvitation(app, group, inv.GetInvitee()); err != nil {
			return err
		}
	}
	uploads, err := listPrefix(t.b(bucketUploads), groupPrefix(app, group), func() *storagev1.GroupUploadRecord { return &storagev1.GroupUploadRecord{} })
	if err != nil {
		return err
	}
	for _, u := range uploads {
		if err := t.DeleteUpload(app, group, u.GetOwner()); err != nil {
			return err
		}
	}
	for _, b := range [][]byte{bucketBans, bucketJoinRequests, bucketEpochs, bucketEpochKeys, bucketMembership} {
		if err := deletePrefix(t.b(b), groupPrefix(app, group)); err != nil {
			return err
		}
	}
	if err := t.SetRotationDue(app, group, tsTime(g.GetRotationDueAt()), time.Time{}); err != nil {
		return err
	}
	return t.b(bucketGroups).Delete(groupKey(app, group))
}
