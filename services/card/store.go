package card

import (
	"bytes"
	"fmt"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// PublishState is what a PublishCheck sees of the identity of a new card: its ACTIVE
// card, the stored card with the new card's id, and the stored card that the new
// card's previous_card_id names (each nil if there is none), and whether the identity
// has published any card before.
type PublishState struct {
	Active, Same, Named *cardstoragev1.CardRecord
	HasHistory          bool
}

// PublishCheck decides, inside the transaction of a publication, whether a card may be
// published. It returns an error to refuse (nothing is written), a stored record to
// answer with instead of writing anything (a retry of the active card), or neither to
// publish.
type PublishCheck func(PublishState) (*cardstoragev1.CardRecord, error)

// ResetGrantUse is the reset grant a reset publication spends.
type ResetGrantUse struct {
	// ID is the grant's id (its jti), unique per app.
	ID string
	// ExpiresAt is when the grant stops verifying anyway; the spent record is kept
	// until then (and a margin), then pruned.
	ExpiresAt time.Time
}

// spentGrantMargin is how long after its expiry a spent grant is still remembered: more
// than the clock leeway with which grants are verified.
const spentGrantMargin = time.Minute

// Store is the card service's state. Every method is one transaction: it commits whole
// or changes nothing. Cards are namespaced by app.
type Store interface {
	// ServiceKey returns the counter-signing key. When the file has none yet it stores
	// candidate first.
	ServiceKey(candidate *cardstoragev1.ServiceKeyRecord) (*cardstoragev1.ServiceKeyRecord, error)
	// ServiceKeys returns every service key, oldest first: the retired ones (public
	// key and superseded_at, no seed), then the current one. ErrNotFound if there is
	// none yet.
	ServiceKeys() ([]*cardstoragev1.ServiceKeyRecord, error)
	// RotateServiceKey makes next the current key and retires the current one at at,
	// in one transaction: the retired record keeps the public key and loses the seed.
	// It returns the retired record. ErrNotFound if there is no current key. Rotations
	// stay chained whichever replica makes them (rotateServiceKey): next's rotation
	// statement must be signed by the current key (ErrStaleServiceKey if it names
	// another), and at may not be before the latest card publication (ErrConflict), so
	// that every card a key signed was published by the key's superseded_at.
	RotateServiceKey(next *cardstoragev1.ServiceKeyRecord, at time.Time) (*cardstoragev1.ServiceKeyRecord, error)

	// Publish stores card, ACTIVE, as its identity's active card if check allows it:
	// the identity's active card (if any) becomes SUPERSEDED by it at its published_at,
	// the card gets the next event sequence, and a PUBLISHED event is appended. It
	// returns the stored card and true, or what check returned instead and false.
	//
	// A reset card (card.reset, with the grant it spends; grant is nil for any other
	// card) revokes the active card instead of superseding it, with a REVOKED event
	// before the PUBLISHED one, and records the grant as spent: a grant already spent
	// is refused with ErrPermission, and nothing is written.
	//
	// A card counter-signed by a key that is no longer the current one (another
	// replica rotated it) is refused with ErrStaleServiceKey, before the check runs.
	Publish(card *cardstoragev1.CardRecord, grant *ResetGrantUse, check PublishCheck) (*cardstoragev1.CardRecord, bool, error)
	// Revoke marks the card of appID with id cardID REVOKED at at, and appends a
	// REVOKED event; if it was its identity's active card, the identity is left without
	// one. ErrNotFound if appID has no such card, ErrPermission if it is not identity's.
	// It returns the card and whether it changed: a revoked card is returned unchanged
	// and nothing is written.
	Revoke(appID, identity string, cardID []byte, at time.Time) (*cardstoragev1.CardRecord, bool, error)

	// Card returns the card of appID with id cardID, whatever its status.
	Card(appID string, cardID []byte) (*cardstoragev1.CardRecord, error)
	// ActiveCards returns the active card of each identity of appID that has one, in
	// the order of identities.
	ActiveCards(appID string, identities []string) ([]*cardstoragev1.ActiveCardRecord, error)
	// History returns up to limit cards of identity, newest first, published before
	// the event sequence before (0: from the newest), and whether older ones remain.
	History(appID, identity string, before uint64, limit int) ([]*cardstoragev1.CardRecord, bool, error)
	// Events returns up to limit events with a sequence above after, in order, and the
	// latest sequence assigned.
	Events(after uint64, limit int) ([]*cardstoragev1.CardEventRecord, uint64, error)

	// Key transparency (docs/key-transparency.md).

	// LogKey returns the log's first key, whose origin names the log. When the file
	// has none yet it stores candidate first.
	LogKey(candidate *cardstoragev1.LogKeyRecord) (*cardstoragev1.LogKeyRecord, error)
	// LogKeys returns every log key, oldest first: the first one and those that
	// rotations added. The retired ones have retired_at and no seed; the others sign
	// every checkpoint. ErrNotFound before the first.
	LogKeys() ([]*cardstoragev1.LogKeyRecord, error)
	// AddLogKey starts a log key rotation, in one transaction (checkAddLogKey): next
	// signs beside the keys that sign, and the latest checkpoint is signed again by
	// all of them (sign). It returns the latest checkpoint so signed, nil before the
	// first.
	AddLogKey(next *cardstoragev1.LogKeyRecord, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, error)
	// RetireLogKey retires the log key keyID at at, in one transaction
	// (retireLogKey): its seed is erased, and the latest checkpoint is signed again by
	// the keys that remain. It returns the retired record and that checkpoint (nil
	// before the first).
	RetireLogKey(keyID string, at time.Time, sign CheckpointSigner) (*cardstoragev1.LogKeyRecord, *cardstoragev1.CheckpointRecord, error)
	// AppendLog appends to the log, in one transaction, the card events it does not
	// hold yet, in sequence order and up to limit of them: entry i is the event of
	// sequence i+1, and a gap in the feed is an error. It applies them to the map and
	// stores the checkpoint that sign makes of the new state with the log keys that
	// sign (read in the same transaction, so that every replica follows a rotation),
	// made at at. It returns that checkpoint and how many events it appended. With no
	// new event it writes nothing and returns the latest checkpoint, except on a log
	// without any, for which it stores the checkpoint of the empty log.
	AppendLog(limit int, at time.Time, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, int, error)
	// LatestCheckpoint returns the latest checkpoint; ErrNotFound before the first.
	LatestCheckpoint() (*cardstoragev1.CheckpointRecord, error)
	// LogEntries returns the exact LogLeaf bytes of up to count entries from start.
	LogEntries(start uint64, count int) ([][]byte, error)
	// InclusionProof returns entry index and its inclusion proof in the log of size
	// entries; ConsistencyProof the proof that the log of size1 entries is a prefix of
	// the log of size2. Both need sizes no larger than the log's.
	InclusionProof(index, size uint64) ([]byte, [][]byte, error)
	ConsistencyProof(size1, size2 uint64) ([][]byte, error)
	// ProvedCards returns, in one read, the latest checkpoint and, for each identity
	// of appID in order, its lookup proof at that checkpoint and the card its map
	// entry names. ErrNotFound before the first checkpoint.
	ProvedCards(appID string, identities []string) (*cardstoragev1.CheckpointRecord, []ProvedCard, error)

	Close() error
}

// noCard is the answer for a card id that names no card of the app.
func noCard(cardID []byte) error {
	return errs.NotFoundf("no card %s in this app", cardIDString(cardID))
}

// ErrStaleServiceKey is Publish's answer to a card counter-signed by a service key that
// is no longer the current one, and RotateServiceKey's to a rotation statement that
// names another key than the current one: another replica rotated the key meanwhile.
// The caller reloads the current key (ServiceKey(nil)) and signs again.
var ErrStaleServiceKey = errs.Conflictf("the card service key was rotated meanwhile, by another replica: retry")

// rotateServiceKey is the check and the change of RotateServiceKey, the same in every
// engine. It checks that next is not current, that its rotation statement is current's
// (signed by it, naming it as the previous key) and names next exactly, and that at is
// not before latestPublished, the publication time of the latest card (so no card the
// current key signed postdates its retirement). It returns the record current keeps
// once retired at at: the public key, not the seed.
func rotateServiceKey(current, next *cardstoragev1.ServiceKeyRecord, at, latestPublished time.Time) (*cardstoragev1.ServiceKeyRecord, error) {
	if current.GetKeyId() == next.GetKeyId() {
		return nil, errs.Conflictf("service key %s is already the current key", next.GetKeyId())
	}
	r, err := e2ee.ParseServiceKeyRotation(next.GetRotationContent())
	if err != nil {
		return nil, fmt.Errorf("card: rotation to service key %s: its statement: %w", next.GetKeyId(), err)
	}
	if r.PreviousKeyID != current.GetKeyId() {
		return nil, ErrStaleServiceKey
	}
	if _, err := e2ee.VerifyServiceKeyRotation(current.GetKeyId(), serviceKeyPublic(current), next.GetRotationContent(), next.GetRotationSignature()); err != nil {
		return nil, fmt.Errorf("card: rotation to service key %s: %w", next.GetKeyId(), err)
	}
	if r.NewKeyID != next.GetKeyId() || !bytes.Equal(r.NewPublicKey, next.GetPublicKey()) {
		return nil, fmt.Errorf("card: the rotation statement names key %s, not the new key %s", r.NewKeyID, next.GetKeyId())
	}
	if at.Before(latestPublished) {
		return nil, errs.Conflictf("a card was published at %s, after this rotation's time %s (a replica's clock is ahead of this one's): retry",
			latestPublished.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano))
	}
	return &cardstoragev1.ServiceKeyRecord{
		KeyId:        current.GetKeyId(),
		CreatedAt:    current.GetCreatedAt(),
		PublicKey:    serviceKeyPublic(current),
		SupersededAt: timestamppb.New(at),
		// The statement that introduced it stays with it.
		RotationContent:   current.GetRotationContent(),
		RotationSignature: current.GetRotationSignature(),
	}, nil
}

// CheckpointSigner signs the checkpoint of a new state of the log with the log keys
// that sign (seed set, not retired; one, or two during a rotation), oldest first: c
// has its size and roots; the signer sets its origin and returns the signed note.
type CheckpointSigner func(c *kt.Checkpoint, keys []*cardstoragev1.LogKeyRecord) ([]byte, error)

// ProvedCard is one identity's lookup at a checkpoint: the proof, and the card its map
// entry names (nil when it names none).
type ProvedCard struct {
	Proof *ktv1.LookupProof
	Card  *cardstoragev1.CardRecord
}
