package group

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// The buckets of group.db; the layout is documented in proto/umbra/storage/group/v1/group.proto.
var (
	bucketGroups        = []byte("groups")
	bucketMembers       = []byte("members")
	bucketMemberGroups  = []byte("member_groups")
	bucketBans          = []byte("bans")
	bucketJoinRequests  = []byte("join_requests")
	bucketInvitations   = []byte("invitations")
	bucketInviteeGroups = []byte("invitee_groups")
	bucketInviteExpiry  = []byte("invitation_expiry")
	bucketEpochs        = []byte("epochs")
	bucketMembership    = []byte("membership")
	bucketEpochKeys     = []byte("epoch_keys")
	bucketUploads       = []byte("uploads")
	bucketUploadKeys    = []byte("upload_keys")
	bucketRotationDue   = []byte("rotation_due")
	bucketOutbox        = []byte("group_outbox")
	bucketState         = []byte("group_state")

	cardCursorKey = []byte("card_cursor")
	// inviteExpiryKey in group_state says that invitation_expiry covers every
	// invitation. Files written before the index existed lack it, and get the index
	// built when opened.
	inviteExpiryKey = []byte("invitation_expiry_indexed")
)

var schema = boltdb.Schema{
	Version: 1,
	Buckets: [][]byte{
		bucketGroups, bucketMembers, bucketMemberGroups, bucketBans, bucketJoinRequests,
		bucketInvitations, bucketInviteeGroups, bucketEpochs, bucketEpochKeys, bucketUploads,
		bucketUploadKeys, bucketRotationDue, bucketOutbox, bucketState, bucketInviteExpiry,
		bucketMembership,
	},
	Records: []boltdb.RecordBucket{
		{Name: bucketGroups, New: func() proto.Message { return &storagev1.GroupRecord{} }},
		{Name: bucketMembers, New: func() proto.Message { return &storagev1.GroupMemberRecord{} }},
		{Name: bucketBans, New: func() proto.Message { return &storagev1.GroupBanRecord{} }},
		{Name: bucketJoinRequests, New: func() proto.Message { return &storagev1.GroupJoinRequestRecord{} }},
		{Name: bucketInvitations, New: func() proto.Message { return &storagev1.GroupInvitationRecord{} }},
		{Name: bucketEpochs, New: func() proto.Message { return &storagev1.GroupEpochRecord{} }},
		{Name: bucketMembership, New: func() proto.Message { return &storagev1.GroupStatementRecord{} }},
		{Name: bucketEpochKeys, New: func() proto.Message { return &storagev1.GroupEpochKeyRecord{} }},
		{Name: bucketUploads, New: func() proto.Message { return &storagev1.GroupUploadRecord{} }},
		{Name: bucketUploadKeys, New: func() proto.Message { return &storagev1.GroupStagedKeyRecord{} }},
		{Name: bucketOutbox, New: func() proto.Message { return &storagev1.GroupOutboxRecord{} }},
		// The card cursor: damaged, it would skip card events (and the rotations they
		// require) or replay them.
		{Name: bucketState},
	},
}

// Verify checks group.db at path offline (boltdb.Verify): its pages, every record, and
// that each member_groups and invitee_groups entry has its member or invitation.
func Verify(path string) (*boltdb.Report, error) {
	return boltdb.Verify(path, schema, func(tx *bolt.Tx, r *boltdb.Report) {
		for _, idx := range []struct{ index, records []byte }{
			{bucketMemberGroups, bucketMembers}, {bucketInviteeGroups, bucketInvitations},
		} {
			records := tx.Bucket(idx.records)
			_ = tx.Bucket(idx.index).ForEach(func(k, _ []byte) error {
				r.Entries++
				// app 0 identity 0 group indexes app 0 group 0 identity.
				parts := bytes.Split(k, []byte{0})
				if len(parts) != 3 || records.Get(boltdb.Key(string(parts[0]), string(parts[2]), string(parts[1]))) == nil {
					r.Problemf("%s: entry %q names no stored record", idx.index, k)
				}
				return nil
			})
		}
	})
}

// batchDelay is how long a Batch waits for others to share its commit.
const batchDelay = 2 * time.Millisecond

// BoltStore is the Store on group.db, a bbolt file.
type BoltStore struct {
	db *boltdb.DB
}

var _ Store = (*BoltStore)(nil)

// OpenBoltStore opens (or creates) group.db at path.
func OpenBoltStore(path string) (*BoltStore, error) {
	db, err := boltdb.Open(path, schema, boltdb.Options{})
	if err != nil {
		return nil, err
	}
	// AuthorizeSend counts every encrypted message in a Batch; bbolt's default wait of
	// 10 ms for more writers would be added to each lone send.
	db.MaxBatchDelay = batchDelay
	if err := boltdb.Protect(path, func() error { return indexInvitationExpiry(db) }); err != nil {
		db.Close()
		return nil, fmt.Errorf("group: index invitations by expiry in %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// indexInvitationExpiry builds invitation_expiry from the invitations, once, for a file
// written before the index existed.
func indexInvitationExpiry(db *boltdb.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		state := tx.Bucket(bucketState)
		if v := state.Get(inviteExpiryKey); v != nil {
			_, err := boltdb.Unseal(state, inviteExpiryKey, v)
			return err
		}
		idx := tx.Bucket(bucketInviteExpiry)
		err := tx.Bucket(bucketInvitations).ForEach(func(k, v []byte) error {
			inv := &storagev1.GroupInvitationRecord{}
			if err := boltdb.DecodeProto(tx.Bucket(bucketInvitations), k, v, inv); err != nil {
				return fmt.Errorf("invitation %q: %w", k, err)
			}
			return idx.Put(inviteExpiryEntry(inv.GetExpiresAt().AsTime(), k), nil)
		})
		if err != nil {
			return err
		}
		return boltdb.PutRecord(state, inviteExpiryKey, []byte{1})
	})
}

// Close closes the file.
func (s *BoltStore) Close() error { return s.db.Close() }

// DB is the bbolt file, for what only a bbolt engine has: the node's online backups,
// its offline checks and the watch of its writes.
func (s *BoltStore) DB() *boltdb.DB { return s.db }

// View runs fn in a read-only transaction.
func (s *BoltStore) View(fn func(Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(&boltTx{tx: tx}) })
}

// Update runs fn in a read-write transaction, committed when fn returns nil.
func (s *BoltStore) Update(fn func(Tx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn(&boltTx{tx: tx}) })
}

// Batch is Update coalesced with concurrent calls into one commit. fn may run more
// than once (only one run commits), so it must reset whatever it reports.
func (s *BoltStore) Batch(fn func(Tx) error) error {
	return s.db.Batch(func(tx *bolt.Tx) error { return fn(&boltTx{tx: tx}) })
}

// ClaimOutbox returns up to limit outbox records, oldest first: group.db has one
// process, whose delivery loop is the only one.
func (s *BoltStore) ClaimOutbox(limit int) ([]*storagev1.GroupOutboxRecord, error) {
	var out []*storagev1.GroupOutboxRecord
	err := s.View(func(tx Tx) error {
		var err error
		out, err = tx.Outbox(limit)
		return err
	})
	return out, err
}

// boltTx is a Tx on group.db.
type boltTx struct {
	tx *bolt.Tx
	// wroteEvents says that this transaction wrote outbox records, so the delivery
	// loop is woken once it commits.
	wroteEvents bool
}

func (t *boltTx) b(name []byte) *bolt.Bucket { return t.tx.Bucket(name) }

func (t *boltTx) WroteEvents() bool { return t.wroteEvents }

func groupKey(app, group string) []byte { return boltdb.Key(app, group) }

// groupPrefix is app 0 group 0: the prefix of everything kept per group.
func groupPrefix(app, group string) []byte { return boltdb.Key(app, group, "") }

func memberKey(app, group, identity string) []byte { return boltdb.Key(app, group, identity) }

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
	return getOptional(t.b(bucketMembers), memberKey(app, group, identity), &storagev1.GroupMemberRecord{})
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
	return getOptional(t.b(bucketBans), memberKey(app, group, identity), &storagev1.GroupBanRecord{})
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
	return getOptional(t.b(bucketJoinRequests), memberKey(app, group, identity), &storagev1.GroupJoinRequestRecord{})
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
	return getOptional(t.b(bucketInvitations), memberKey(app, group, invitee), &storagev1.GroupInvitationRecord{})
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

func epochKey(app, group string, epoch uint64) []byte {
	return append(groupPrefix(app, group), boltdb.U64(epoch)...)
}

func (t *boltTx) Epoch(app, group string, epoch uint64) (*storagev1.GroupEpochRecord, error) {
	return getOptional(t.b(bucketEpochs), epochKey(app, group, epoch), &storagev1.GroupEpochRecord{})
}

func (t *boltTx) PutEpoch(app, group string, e *storagev1.GroupEpochRecord) error {
	return boltdb.PutProto(t.b(bucketEpochs), epochKey(app, group, e.GetEpoch()), e)
}

func (t *boltTx) PutStatement(app, group string, r *storagev1.GroupStatementRecord) error {
	return boltdb.PutProto(t.b(bucketMembership), epochKey(app, group, r.GetSequence()), r)
}

func (t *boltTx) Statements(app, group string, after uint64, fn func(*storagev1.GroupStatementRecord) (bool, error)) error {
	return scanPrefix(t.b(bucketMembership), groupPrefix(app, group), epochKey(app, group, after+1),
		func() *storagev1.GroupStatementRecord { return &storagev1.GroupStatementRecord{} }, fn)
}

func epochKeyKey(app, group, identity string, epoch uint64) []byte {
	return append(boltdb.Key(app, group, identity, ""), boltdb.U64(epoch)...)
}

func (t *boltTx) EpochKey(app, group, identity string, epoch uint64) (*storagev1.GroupEpochKeyRecord, error) {
	return getOptional(t.b(bucketEpochKeys), epochKeyKey(app, group, identity, epoch), &storagev1.GroupEpochKeyRecord{})
}

func (t *boltTx) PutEpochKey(app, group, identity string, k *storagev1.GroupEpochKeyRecord) error {
	return boltdb.PutProto(t.b(bucketEpochKeys), epochKeyKey(app, group, identity, k.GetEpoch()), k)
}

func (t *boltTx) EpochKeys(app, group, identity string, after uint64, fn func(*storagev1.GroupEpochKeyRecord) (bool, error)) error {
	return scanPrefix(t.b(bucketEpochKeys), boltdb.Key(app, group, identity, ""), epochKeyKey(app, group, identity, after+1),
		func() *storagev1.GroupEpochKeyRecord { return &storagev1.GroupEpochKeyRecord{} }, fn)
}

func (t *boltTx) Upload(app, group, owner string) (*storagev1.GroupUploadRecord, error) {
	return getOptional(t.b(bucketUploads), memberKey(app, group, owner), &storagev1.GroupUploadRecord{})
}

func (t *boltTx) PutUpload(app, group string, u *storagev1.GroupUploadRecord) error {
	return boltdb.PutProto(t.b(bucketUploads), memberKey(app, group, u.GetOwner()), u)
}

func (t *boltTx) DeleteUpload(app, group, owner string) error {
	u, err := t.Upload(app, group, owner)
	if err != nil || u == nil {
		return err
	}
	if err := deletePrefix(t.b(bucketUploadKeys), boltdb.Key(u.GetUploadId(), "")); err != nil {
		return err
	}
	return t.b(bucketUploads).Delete(memberKey(app, group, owner))
}

func (t *boltTx) StagedKey(uploadID, identity string) (*storagev1.GroupStagedKeyRecord, error) {
	return getOptional(t.b(bucketUploadKeys), boltdb.Key(uploadID, identity), &storagev1.GroupStagedKeyRecord{})
}

func (t *boltTx) PutStagedKey(uploadID string, k *storagev1.GroupStagedKeyRecord) error {
	return boltdb.PutProto(t.b(bucketUploadKeys), boltdb.Key(uploadID, k.GetIdentity()), k)
}

func (t *boltTx) StagedKeys(uploadID string) ([]*storagev1.GroupStagedKeyRecord, error) {
	return listPrefix(t.b(bucketUploadKeys), boltdb.Key(uploadID, ""), func() *storagev1.GroupStagedKeyRecord { return &storagev1.GroupStagedKeyRecord{} })
}

func (t *boltTx) ExpiredUploads(now time.Time, limit int) ([][3]string, error) {
	var out [][3]string
	err := t.b(bucketUploads).ForEach(func(k, v []byte) error {
		if len(out) >= limit {
			return nil
		}
		u := &storagev1.GroupUploadRecord{}
		if err := boltdb.DecodeProto(t.b(bucketUploads), k, v, u); err != nil {
			return err
		}
		if !now.Before(u.GetExpiresAt().AsTime()) {
			parts := bytes.SplitN(k, []byte{0}, 3)
			if len(parts) == 3 {
				out = append(out, [3]string{string(parts[0]), string(parts[1]), string(parts[2])})
			}
		}
		return nil
	})
	return out, err
}

// dueKey is u64(unix ns) 0 app 0 group.
func dueKey(at time.Time, app, group string) []byte {
	return append(append(boltdb.U64(uint64(at.UnixNano())), 0), boltdb.Key(app, group)...)
}

func (t *boltTx) SetRotationDue(app, group string, old, at time.Time) error {
	b := t.b(bucketRotationDue)
	if !old.IsZero() {
		if err := b.Delete(dueKey(old, app, group)); err != nil {
			return err
		}
	}
	if at.IsZero() {
		return nil
	}
	return b.Put(dueKey(at, app, group), nil)
}

func (t *boltTx) DueGroups(now time.Time, limit int) ([]DueEntry, error) {
	var out []DueEntry
	c := t.b(bucketRotationDue).Cursor()
	end := boltdb.U64(uint64(now.UnixNano()))
	for k, _ := c.First(); k != nil && len(out) < limit && bytes.Compare(k[:8], end) <= 0; k, _ = c.Next() {
		at, err := boltdb.ParseU64(k[:8])
		if err != nil {
			return nil, err
		}
		parts := bytes.SplitN(k[9:], []byte{0}, 2)
		if len(parts) == 2 {
			out = append(out, DueEntry{At: time.Unix(0, int64(at)), App: string(parts[0]), Group: string(parts[1])})
		}
	}
	return out, nil
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

func (t *boltTx) AppendOutbox(r *storagev1.GroupOutboxRecord) error {
	b := t.b(bucketOutbox)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	r.Sequence = seq
	t.wroteEvents = true
	return boltdb.PutProto(b, boltdb.U64(seq), r)
}

func (t *boltTx) Outbox(limit int) ([]*storagev1.GroupOutboxRecord, error) {
	var out []*storagev1.GroupOutboxRecord
	c := t.b(bucketOutbox).Cursor()
	for k, v := c.First(); k != nil && len(out) < limit; k, v = c.Next() {
		r := &storagev1.GroupOutboxRecord{}
		if err := boltdb.DecodeProto(t.b(bucketOutbox), k, v, r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (t *boltTx) DeleteOutbox(seq uint64) error { return t.b(bucketOutbox).Delete(boltdb.U64(seq)) }

func (t *boltTx) CardCursor() (uint64, error) {
	b := t.b(bucketState)
	v := b.Get(cardCursorKey)
	if v == nil {
		return 0, nil
	}
	v, err := boltdb.Unseal(b, cardCursorKey, v)
	if err != nil {
		return 0, err
	}
	return boltdb.ParseU64(v)
}

func (t *boltTx) SetCardCursor(seq uint64) error {
	return boltdb.PutRecord(t.b(bucketState), cardCursorKey, boltdb.U64(seq))
}

// getOptional reads key into m, or returns nil if there is no such record.
func getOptional[M proto.Message](b *bolt.Bucket, key []byte, m M) (M, error) {
	var zero M
	if err := boltdb.GetProto(b, key, m); err != nil {
		if errors.Is(err, errs.ErrNotFound) {
			return zero, nil
		}
		return zero, err
	}
	return m, nil
}

// scanPrefix decodes the records under prefix from the key start on, in key order, and
// calls fn with each until it returns false.
func scanPrefix[M proto.Message](b *bolt.Bucket, prefix, start []byte, newM func() M, fn func(M) (bool, error)) error {
	c := b.Cursor()
	for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		m := newM()
		if err := boltdb.DecodeProto(b, k, v, m); err != nil {
			return err
		}
		more, err := fn(m)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// listPrefix decodes every record under prefix, in key order.
func listPrefix[M proto.Message](b *bolt.Bucket, prefix []byte, newM func() M) ([]M, error) {
	var out []M
	err := scanPrefix(b, prefix, prefix, newM, func(m M) (bool, error) {
		out = append(out, m)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// scanIndex calls fn with the last part of each key under prefix, after `after`.
func scanIndex(b *bolt.Bucket, prefix []byte, after string, fn func(string) (bool, error)) error {
	c := b.Cursor()
	start := prefix
	if after != "" {
		start = append(append(append([]byte(nil), prefix...), after...), 0)
	}
	for k, _ := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		more, err := fn(string(k[len(prefix):]))
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// deletePrefix deletes every key under prefix.
func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
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
