package group

import (
	"bytes"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
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
