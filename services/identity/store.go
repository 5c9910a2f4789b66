package identity

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	identitystoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/identity/v1"
)

// Store is the identity service's state. Every method is one transaction: it commits
// whole or changes nothing.
type Store interface {
	// CreateApp stores a new app with its first key.
	CreateApp(app *identitystoragev1.AppRecord, key *identitystoragev1.AppKeyRecord) error
	// App returns an app and all its keys.
	App(appID string) (*identitystoragev1.AppRecord, []*identitystoragev1.AppKeyRecord, error)
	// AddAppKey stores a new key of an existing app.
	AddAppKey(key *identitystoragev1.AppKeyRecord) error
	// RevokeAppKey marks a key of appID revoked at at; revoking twice keeps the first time.
	RevokeAppKey(appID, keyID string, at time.Time) (*identitystoragev1.AppKeyRecord, error)
	// AppKey returns a key by id.
	AppKey(keyID string) (*identitystoragev1.AppKeyRecord, error)

	// SigningKeys returns every stored signing key.
	SigningKeys() ([]*identitystoragev1.SigningKeyRecord, error)
	// AddSigningKey stores key as the active signing key: the active one it replaces is
	// retired at key's creation and verifies until verifyUntil, and keys whose
	// verify_until has passed are deleted. With onlyIfNone it stores key only when there
	// is no active key yet, and reports whether it did.
	AddSigningKey(key *identitystoragev1.SigningKeyRecord, verifyUntil time.Time, onlyIfNone bool) (bool, error)

	// Revoke records that identity's tokens issued before before are revoked. An
	// earlier time than the one in force changes nothing. It returns the record in force.
	Revoke(appID, identity string, before time.Time) (*identitystoragev1.RevocationRecord, error)
	// Revocation returns the revocation in force for identity, or ErrNotFound.
	Revocation(appID, identity string) (*identitystoragev1.RevocationRecord, error)
	// Revocations returns up to limit records with a sequence above after, in sequence
	// order, and the latest sequence assigned.
	Revocations(after uint64, limit int) ([]*identitystoragev1.RevocationRecord, uint64, error)

	Close() error
}

// rotateSigningKeys applies to the stored keys, in their order, what AddSigningKey does
// for a key created at now, through each engine's retire (write back a key it has
// retired) and drop (delete a key): the active key retires at now and verifies until
// verifyUntil, and keys whose verify_until has passed are dropped. With onlyIfNone, an
// active key stops it there and add is false; otherwise add is true.
func rotateSigningKeys(keys []*identitystoragev1.SigningKeyRecord, now *timestamppb.Timestamp, verifyUntil time.Time, onlyIfNone bool,
	retire func(*identitystoragev1.SigningKeyRecord) error, drop func(keyID string) error) (add bool, err error) {
	for _, old := range keys {
		switch {
		case old.GetRetiredAt() == nil:
			if onlyIfNone {
				return false, nil
			}
			old.RetiredAt = now
			old.VerifyUntil = timestamppb.New(verifyUntil)
			if err := retire(old); err != nil {
				return false, err
			}
		case old.GetVerifyUntil().AsTime().Before(now.AsTime()):
			if err := drop(old.GetKeyId()); err != nil {
				return false, err
			}
		}
	}
	return true, nil
}
