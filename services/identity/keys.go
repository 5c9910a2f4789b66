package identity

import (
	"context"
	"crypto/ed25519"
	"fmt"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	identitystoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/identity/v1"
)

func (s *Server) newSigningKey() (*identitystoragev1.SigningKeyRecord, error) {
	id, err := s.randomID(10)
	if err != nil {
		return nil, err
	}
	seed, err := s.randomBytes(ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return &identitystoragev1.SigningKeyRecord{KeyId: id, Seed: seed, CreatedAt: timestamppb.New(s.now())}, nil
}

// loadSigner caches the active signing key.
func (s *Server) loadSigner() error {
	keys, err := s.store.SigningKeys()
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.GetRetiredAt() == nil {
			s.mu.Lock()
			s.signer = k
			s.mu.Unlock()
			return nil
		}
	}
	return fmt.Errorf("identity: no active signing key")
}

// publishedKeys returns the keys that still verify: the active one and retired ones
// whose tokens may not have expired yet.
func (s *Server) publishedKeys() ([]*identityv1.SigningKey, error) {
	recs, err := s.store.SigningKeys()
	if err != nil {
		return nil, err
	}
	now := s.now()
	var out []*identityv1.SigningKey
	for _, r := range recs {
		if r.GetRetiredAt() != nil && r.GetVerifyUntil().AsTime().Before(now) {
			continue
		}
		out = append(out, signingKeyView(r))
	}
	return out, nil
}

func signingKeyView(r *identitystoragev1.SigningKeyRecord) *identityv1.SigningKey {
	return &identityv1.SigningKey{
		KeyId:       r.GetKeyId(),
		Algorithm:   auth.Algorithm,
		PublicKey:   ed25519.NewKeyFromSeed(r.GetSeed()).Public().(ed25519.PublicKey),
		CreatedAt:   r.GetCreatedAt(),
		Active:      r.GetRetiredAt() == nil,
		VerifyUntil: r.GetVerifyUntil(),
	}
}

// GetSigningKeys implements IdentityService.
func (s *Server) GetSigningKeys(context.Context, *identityv1.GetSigningKeysRequest) (*identityv1.GetSigningKeysResponse, error) {
	keys, err := s.publishedKeys()
	if err != nil {
		return nil, err
	}
	return &identityv1.GetSigningKeysResponse{Keys: keys}, nil
}

// VerificationKeys implements auth.KeySet from the store itself.
func (s *Server) VerificationKeys(context.Context) (map[string]ed25519.PublicKey, error) {
	keys, err := s.publishedKeys()
	if err != nil {
		return nil, err
	}
	return auth.KeysByID(keys)
}

// RotateSigningKey implements IdentityService. The retired key verifies for the longest
// token lifetime plus the clock leeway, so every token it signed stays valid until it
// expires.
func (s *Server) RotateSigningKey(context.Context, *identityv1.RotateSigningKeyRequest) (*identityv1.RotateSigningKeyResponse, error) {
	key, err := s.newSigningKey()
	if err != nil {
		return nil, err
	}
	verifyUntil := key.GetCreatedAt().AsTime().Add(auth.MaxTokenTTL + auth.Leeway)
	if _, err := s.store.AddSigningKey(key, verifyUntil, false); err != nil {
		return nil, err
	}
	if err := s.loadSigner(); err != nil {
		return nil, err
	}
	s.log.Info("signing key rotated", zap.String("kid", key.GetKeyId()), zap.Time("previous_verify_until", verifyUntil))
	return &identityv1.RotateSigningKeyResponse{Key: signingKeyView(key)}, nil
}
