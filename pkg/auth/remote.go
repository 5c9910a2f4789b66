package auth

import (
	"context"
	"crypto/ed25519"
	"fmt"

	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// Remote is the KeySet and RevocationSource of a service that reaches the identity
// service over gRPC.
type Remote struct {
	Client identityv1.IdentityServiceClient
}

// VerificationKeys implements KeySet.
func (r Remote) VerificationKeys(ctx context.Context) (map[string]ed25519.PublicKey, error) {
	resp, err := r.Client.GetSigningKeys(ctx, &identityv1.GetSigningKeysRequest{})
	if err != nil {
		return nil, err
	}
	return KeysByID(resp.GetKeys())
}

// ListRevocations implements RevocationSource.
func (r Remote) ListRevocations(ctx context.Context, req *identityv1.ListRevocationsRequest) (*identityv1.ListRevocationsResponse, error) {
	return r.Client.ListRevocations(ctx, req)
}

// KeysByID indexes published signing keys by key id, refusing any that is not an
// Ed25519 key.
func KeysByID(keys []*identityv1.SigningKey) (map[string]ed25519.PublicKey, error) {
	out := make(map[string]ed25519.PublicKey, len(keys))
	for _, k := range keys {
		if k.GetAlgorithm() != Algorithm || len(k.GetPublicKey()) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("signing key %q is not an Ed25519 key", k.GetKeyId())
		}
		out[k.GetKeyId()] = ed25519.PublicKey(k.GetPublicKey())
	}
	return out, nil
}
