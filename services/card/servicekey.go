package card

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The card service's counter-signing keys: the current one signs every card
// published; a rotation replaces it, and the retired key stays published (without its
// private half) so that the cards it signed keep verifying.

// newServiceKey makes a counter-signing key; its id is derived from its public key.
func newServiceKey(r io.Reader, now time.Time) (*cardstoragev1.ServiceKeyRecord, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(r, seed); err != nil {
		return nil, fmt.Errorf("card: randomness: %w", err)
	}
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	h := sha256.Sum256(pub)
	return &cardstoragev1.ServiceKeyRecord{KeyId: b32.EncodeToString(h[:10]), Seed: seed, CreatedAt: timestamppb.New(now), PublicKey: pub}, nil
}

// serviceKeyPublic returns a record's public key: stored, or (for records written
// before rotations existed) derived from its seed.
func serviceKeyPublic(rec *cardstoragev1.ServiceKeyRecord) ed25519.PublicKey {
	if len(rec.GetPublicKey()) == ed25519.PublicKeySize {
		return rec.GetPublicKey()
	}
	return ed25519.NewKeyFromSeed(rec.GetSeed()).Public().(ed25519.PublicKey)
}

// serviceKeyView is a key as GetServiceKey shows it.
func serviceKeyView(rec *cardstoragev1.ServiceKeyRecord) *cardv1.ServiceKey {
	v := &cardv1.ServiceKey{
		KeyId:        rec.GetKeyId(),
		Algorithm:    "Ed25519",
		PublicKey:    serviceKeyPublic(rec),
		CreatedAt:    rec.GetCreatedAt(),
		SupersededAt: rec.GetSupersededAt(),
	}
	if len(rec.GetRotationContent()) > 0 {
		v.Rotation = &cardv1.ServiceKeyRotation{Content: rec.GetRotationContent(), Signature: rec.GetRotationSignature()}
	}
	return v
}

// serviceSign counter-signs a card id with the current key and returns the signature
// and the key's id. A rotation waits for signatures in progress, so a card signed with
// a key was published (its published_at taken) before that key's superseded_at.
func (s *Server) serviceSign(cardID []byte) (signature []byte, keyID string) {
	s.keyMu.RLock()
	defer s.keyMu.RUnlock()
	return e2ee.ServiceSign(s.key, cardID), s.keyRec.GetKeyId()
}

// maxKeyAttempts bounds how many times a publication or a rotation starts again after
// another replica rotated the service key.
const maxKeyAttempts = 3

// reloadServiceKey reads the current service key from the store, unless a call since
// the card was signed with stale did.
func (s *Server) reloadServiceKey(stale string) error {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if s.keyRec.GetKeyId() != stale {
		return nil
	}
	return s.loadServiceKey()
}

// loadServiceKey reads the current service key from the store; keyMu is held.
func (s *Server) loadServiceKey() error {
	rec, err := s.store.ServiceKey(nil)
	if err != nil {
		return fmt.Errorf("card: service key: %w", err)
	}
	if len(rec.GetSeed()) != ed25519.SeedSize {
		return fmt.Errorf("card: stored service key %s has a %d-byte seed", rec.GetKeyId(), len(rec.GetSeed()))
	}
	if rec.GetKeyId() != s.keyRec.GetKeyId() {
		s.log.Info("service key rotated by another replica", zap.String("key_id", rec.GetKeyId()), zap.String("previous_key_id", s.keyRec.GetKeyId()))
	}
	s.key, s.keyRec = ed25519.NewKeyFromSeed(rec.GetSeed()), rec
	return nil
}

// GetServiceKey implements CardService.
func (s *Server) GetServiceKey(context.Context, *cardv1.GetServiceKeyRequest) (*cardv1.GetServiceKeyResponse, error) {
	recs, err := s.store.ServiceKeys()
	if err != nil {
		return nil, err
	}
	resp := &cardv1.GetServiceKeyResponse{}
	for _, r := range recs {
		resp.Keys = append(resp.Keys, serviceKeyView(r))
	}
	resp.Key = resp.Keys[len(resp.Keys)-1]
	return resp, nil
}

// RotateServiceKey implements CardService.
func (s *Server) RotateServiceKey(context.Context, *cardv1.RotateServiceKeyRequest) (*cardv1.RotateServiceKeyResponse, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	var next, retired *cardstoragev1.ServiceKeyRecord
	for attempt := 1; ; attempt++ {
		at := s.now()
		var err error
		if next, err = newServiceKey(s.rand, at); err != nil {
			return nil, err
		}
		// The key being retired vouches for its successor, so clients that pinned it
		// follow the rotation on its signature, not on this server's word
		// (docs/wire-format.md, 5.6).
		next.RotationContent, next.RotationSignature, err = e2ee.SignServiceKeyRotation(s.key, s.keyRec.GetKeyId(), next.GetKeyId(), next.GetPublicKey(), at)
		if err != nil {
			return nil, fmt.Errorf("card: sign the service key rotation: %w", err)
		}
		retired, err = s.store.RotateServiceKey(next, at)
		if err == nil {
			break
		}
		// Another replica rotated the key, or published a card at a later time by its
		// clock: start again from the current key, at a new time.
		if !errors.Is(err, errs.ErrConflict) || attempt == maxKeyAttempts {
			return nil, err
		}
		if err := s.loadServiceKey(); err != nil {
			return nil, err
		}
	}
	s.key, s.keyRec = ed25519.NewKeyFromSeed(next.GetSeed()), next
	s.log.Info("service key rotated", zap.String("key_id", next.GetKeyId()), zap.String("retired_key_id", retired.GetKeyId()))
	return &cardv1.RotateServiceKeyResponse{Key: serviceKeyView(next), Previous: serviceKeyView(retired)}, nil
}
