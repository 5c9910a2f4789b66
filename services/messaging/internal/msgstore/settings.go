package msgstore

import (
	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// AppSettings implements messaging.Store.
func (s *BoltStore) AppSettings(appID string) (*messagingstoragev1.MessagingAppSettingsRecord, error) {
	rec := &messagingstoragev1.MessagingAppSettingsRecord{}
	if err := s.get(bucketAppSettings, appID, rec, "app %s has the default settings", appID); err != nil {
		return nil, err
	}
	return rec, nil
}

// PutAppSettings implements messaging.Store. It writes in a transaction of its own
// rather than through the committer: the bucket is read and written by nothing else in
// a transaction, and bbolt runs this write between the committer's.
func (s *BoltStore) PutAppSettings(rec *messagingstoragev1.MessagingAppSettingsRecord) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return boltdb.PutProto(tx.Bucket(bucketAppSettings), []byte(rec.GetAppId()), rec)
	})
}
