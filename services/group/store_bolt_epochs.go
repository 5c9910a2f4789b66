// The bbolt engine's epochs, membership statements, epoch keys, uploads and rotation schedule.

package group

import (
	"bytes"
	"time"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

func epochKey(app, group string, epoch uint64) []byte {
	return append(groupPrefix(app, group), boltdb.U64(epoch)...)
}

func (t *boltTx) Epoch(app, group string, epoch uint64) (*storagev1.GroupEpochRecord, error) {
	return boltdb.GetOptional(t.b(bucketEpochs), epochKey(app, group, epoch), &storagev1.GroupEpochRecord{})
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
	return boltdb.GetOptional(t.b(bucketEpochKeys), epochKeyKey(app, group, identity, epoch), &storagev1.GroupEpochKeyRecord{})
}

func (t *boltTx) PutEpochKey(app, group, identity string, k *storagev1.GroupEpochKeyRecord) error {
	return boltdb.PutProto(t.b(bucketEpochKeys), epochKeyKey(app, group, identity, k.GetEpoch()), k)
}

func (t *boltTx) EpochKeys(app, group, identity string, after uint64, fn func(*storagev1.GroupEpochKeyRecord) (bool, error)) error {
	return scanPrefix(t.b(bucketEpochKeys), boltdb.Key(app, group, identity, ""), epochKeyKey(app, group, identity, after+1),
		func() *storagev1.GroupEpochKeyRecord { return &storagev1.GroupEpochKeyRecord{} }, fn)
}

func (t *boltTx) Upload(app, group, owner string) (*storagev1.GroupUploadRecord, error) {
	return boltdb.GetOptional(t.b(bucketUploads), memberKey(app, group, owner), &storagev1.GroupUploadRecord{})
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
	return boltdb.GetOptional(t.b(bucketUploadKeys), boltdb.Key(uploadID, identity), &storagev1.GroupStagedKeyRecord{})
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
