package identity

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	identitystoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/identity/v1"
)

var (
	bucketApps          = []byte("apps")
	bucketAppKeys       = []byte("app_keys")
	bucketAppKeysByApp  = []byte("app_keys_by_app")
	bucketSigningKeys   = []byte("signing_keys")
	bucketRevocations   = []byte("revocations")
	bucketRevocationLog = []byte("revocation_log")
)

// The layout is documented with each record in
// proto/umbra/storage/identity/v1/identity.proto.
var schema = boltdb.Schema{
	Version: 1,
	Buckets: [][]byte{bucketApps, bucketAppKeys, bucketAppKeysByApp, bucketSigningKeys, bucketRevocations, bucketRevocationLog},
	Records: []boltdb.RecordBucket{
		{Name: bucketApps, New: func() proto.Message { return &identitystoragev1.AppRecord{} }},
		{Name: bucketAppKeys, New: func() proto.Message { return &identitystoragev1.AppKeyRecord{} }},
		{Name: bucketSigningKeys, New: func() proto.Message { return &identitystoragev1.SigningKeyRecord{} }},
		{Name: bucketRevocations, New: func() proto.Message { return &identitystoragev1.RevocationRecord{} }},
	},
}

// Verify checks identity.db at path offline (boltdb.Verify): its pages, every record,
// and that each index entry (app_keys_by_app, revocation_log) points at a record.
func Verify(path string) (*boltdb.Report, error) {
	return boltdb.Verify(path, schema, func(tx *bolt.Tx, r *boltdb.Report) {
		keys := tx.Bucket(bucketAppKeys)
		_ = tx.Bucket(bucketAppKeysByApp).ForEach(func(k, _ []byte) error {
			r.Entries++
			i := bytes.IndexByte(k, 0)
			if i < 0 || keys.Get(k[i+1:]) == nil {
				r.Problemf("app_keys_by_app: entry %q names no stored key", k)
			}
			return nil
		})
		revs := tx.Bucket(bucketRevocations)
		_ = tx.Bucket(bucketRevocationLog).ForEach(func(k, v []byte) error {
			r.Entries++
			if len(k) != 8 || revs.Get(v) == nil {
				r.Problemf("revocation_log: entry %x names no stored revocation", k)
			}
			return nil
		})
	})
}

// BoltStore is the Store in a bbolt file.
type BoltStore struct {
	db *boltdb.DB
}

var _ Store = (*BoltStore)(nil)

// OpenBoltStore opens (or creates) identity.db at path.
func OpenBoltStore(path string) (*BoltStore, error) {
	db, err := boltdb.Open(path, schema, boltdb.Options{})
	if err != nil {
		return nil, err
	}
	return &BoltStore{db: db}, nil
}

// Close closes the file.
func (s *BoltStore) Close() error { return s.db.Close() }

// DB exposes the file, for online backups.
func (s *BoltStore) DB() *boltdb.DB { return s.db }

func (s *BoltStore) CreateApp(app *identitystoragev1.AppRecord, key *identitystoragev1.AppKeyRecord) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		apps := tx.Bucket(bucketApps)
		if apps.Get([]byte(app.GetAppId())) != nil {
			return errs.Existsf("app %s already exists", app.GetAppId())
		}
		if err := boltdb.PutProto(apps, []byte(app.GetAppId()), app); err != nil {
			return err
		}
		return putAppKey(tx, key)
	})
}

func putAppKey(tx *bolt.Tx, key *identitystoragev1.AppKeyRecord) error {
	keys := tx.Bucket(bucketAppKeys)
	if keys.Get([]byte(key.GetKeyId())) != nil {
		return errs.Existsf("app key %s already exists", key.GetKeyId())
	}
	if err := boltdb.PutProto(keys, []byte(key.GetKeyId()), key); err != nil {
		return err
	}
	return tx.Bucket(bucketAppKeysByApp).Put(boltdb.Key(key.GetAppId(), key.GetKeyId()), nil)
}

func (s *BoltStore) App(appID string) (*identitystoragev1.AppRecord, []*identitystoragev1.AppKeyRecord, error) {
	app := &identitystoragev1.AppRecord{}
	var keys []*identitystoragev1.AppKeyRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := getApp(tx, appID, app); err != nil {
			return err
		}
		prefix := boltdb.Key(appID, "")
		c := tx.Bucket(bucketAppKeysByApp).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			key := &identitystoragev1.AppKeyRecord{}
			if err := boltdb.GetProto(tx.Bucket(bucketAppKeys), k[len(prefix):], key); err != nil {
				return fmt.Errorf("app key index of %s: %w", appID, err)
			}
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return app, keys, nil
}

func getApp(tx *bolt.Tx, appID string, app *identitystoragev1.AppRecord) error {
	err := boltdb.GetProto(tx.Bucket(bucketApps), []byte(appID), app)
	if errors.Is(err, errs.ErrNotFound) {
		return errs.NotFoundf("app %s not found", appID)
	}
	return err
}

func (s *BoltStore) AddAppKey(key *identitystoragev1.AppKeyRecord) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := getApp(tx, key.GetAppId(), &identitystoragev1.AppRecord{}); err != nil {
			return err
		}
		return putAppKey(tx, key)
	})
}

func (s *BoltStore) RevokeAppKey(appID, keyID string, at time.Time) (*identitystoragev1.AppKeyRecord, error) {
	key := &identitystoragev1.AppKeyRecord{}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAppKeys)
		if err := boltdb.GetProto(b, []byte(keyID), key); err != nil || key.GetAppId() != appID {
			if err == nil || errors.Is(err, errs.ErrNotFound) {
				return errs.NotFoundf("app %s has no key %s", appID, keyID)
			}
			return err
		}
		if key.GetRevokedAt() != nil {
			return nil
		}
		key.RevokedAt = timestamppb.New(at)
		return boltdb.PutProto(b, []byte(keyID), key)
	})
	if err != nil {
		return nil, err
	}
	return key, nil
}

func (s *BoltStore) AppKey(keyID string) (*identitystoragev1.AppKeyRecord, error) {
	return boltdb.ViewValue(s.db, func(tx *bolt.Tx) (*identitystoragev1.AppKeyRecord, error) {
		key := &identitystoragev1.AppKeyRecord{}
		return key, boltdb.GetProto(tx.Bucket(bucketAppKeys), []byte(keyID), key)
	})
}

func (s *BoltStore) SigningKeys() ([]*identitystoragev1.SigningKeyRecord, error) {
	return boltdb.ViewValue(s.db, signingKeys)
}

func signingKeys(tx *bolt.Tx) ([]*identitystoragev1.SigningKeyRecord, error) {
	var keys []*identitystoragev1.SigningKeyRecord
	b := tx.Bucket(bucketSigningKeys)
	err := b.ForEach(func(k, _ []byte) error {
		key := &identitystoragev1.SigningKeyRecord{}
		if err := boltdb.GetProto(b, k, key); err != nil {
			return err
		}
		keys = append(keys, key)
		return nil
	})
	return keys, err
}

func (s *BoltStore) AddSigningKey(key *identitystoragev1.SigningKeyRecord, verifyUntil time.Time, onlyIfNone bool) (bool, error) {
	added := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		keys, err := signingKeys(tx)
		if err != nil {
			return err
		}
		b := tx.Bucket(bucketSigningKeys)
		add, err := rotateSigningKeys(keys, key.GetCreatedAt(), verifyUntil, onlyIfNone,
			func(old *identitystoragev1.SigningKeyRecord) error {
				return boltdb.PutProto(b, []byte(old.GetKeyId()), old)
			},
			func(keyID string) error { return b.Delete([]byte(keyID)) })
		if err != nil || !add {
			return err
		}
		added = true
		return boltdb.PutProto(b, []byte(key.GetKeyId()), key)
	})
	return added, err
}

func (s *BoltStore) Revoke(appID, identity string, before time.Time) (*identitystoragev1.RevocationRecord, error) {
	rec := &identitystoragev1.RevocationRecord{}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, log := tx.Bucket(bucketRevocations), tx.Bucket(bucketRevocationLog)
		key := boltdb.Key(appID, identity)
		switch err := boltdb.GetProto(b, key, rec); {
		case err == nil:
			if !before.After(rec.GetBefore().AsTime()) {
				return nil // an equal or later revocation is already in force
			}
			if err := log.Delete(boltdb.U64(rec.GetSequence())); err != nil {
				return err
			}
		case !errors.Is(err, errs.ErrNotFound):
			return err
		}
		seq, err := log.NextSequence()
		if err != nil {
			return err
		}
		rec = &identitystoragev1.RevocationRecord{Sequence: seq, AppId: appID, Identity: identity, Before: timestamppb.New(before)}
		if err := log.Put(boltdb.U64(seq), key); err != nil {
			return err
		}
		return boltdb.PutProto(b, key, rec)
	})
	if err != nil {
		return nil, err
	}
	return rec, nil
}

func (s *BoltStore) Revocation(appID, identity string) (*identitystoragev1.RevocationRecord, error) {
	return boltdb.ViewValue(s.db, func(tx *bolt.Tx) (*identitystoragev1.RevocationRecord, error) {
		rec := &identitystoragev1.RevocationRecord{}
		return rec, boltdb.GetProto(tx.Bucket(bucketRevocations), boltdb.Key(appID, identity), rec)
	})
}

func (s *BoltStore) Revocations(after uint64, limit int) ([]*identitystoragev1.RevocationRecord, uint64, error) {
	var out []*identitystoragev1.RevocationRecord
	var latest uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		log, b := tx.Bucket(bucketRevocationLog), tx.Bucket(bucketRevocations)
		latest = log.Sequence()
		c := log.Cursor()
		for k, v := c.Seek(boltdb.U64(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			rec := &identitystoragev1.RevocationRecord{}
			if err := boltdb.GetProto(b, v, rec); err != nil {
				return fmt.Errorf("revocation log entry %x: %w", k, err)
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, latest, err
}
