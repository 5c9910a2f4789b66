package msgstore

import (
	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/v1"
)

// AppSettings implements messaging.Store.
func (s *BoltStore) AppSettings(appID string) (*storagev1.MessagingAppSettingsRecord, error) {
	rec := &storagev1.MessagingAppSettingsRecord{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return boltdb.GetProto(tx.Bucket(bucketAppSettings), []byte(appID), rec)
	})
	if notFound(err) {
		return nil, errs.NotFoundf("app %s has the default settings", appID)
	}
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// PutAppSettings implements messaging.Store. It writes in a transaction of its own
// rather than through the committer: the bucket is read and written by nothing else in
// a transaction, and bbolt runs this write between the committer's.
func (s *BoltStore) PutAppSettings(rec *storagev1.MessagingAppSettingsRecord) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return boltdb.PutProto(tx.Bucket(bucketAppSettings), []byte(rec.GetAppId()), rec)
	})
}
