package identity

import (
	"time"

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
