package identity

import (
	"context"
	"crypto/ed25519"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// callerFor returns the caller, an app's backend, of an RPC for one of its users:
// identity, which must be a user identity.
func callerFor(ctx context.Context, identity string) (*auth.Principal, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := ident.ValidUser("identity", identity); err != nil {
		return nil, err
	}
	return p, nil
}

// IssueToken implements IdentityService.
func (s *Server) IssueToken(ctx context.Context, req *identityv1.IssueTokenRequest) (*identityv1.IssueTokenResponse, error) {
	p, err := callerFor(ctx, req.GetIdentity())
	if err != nil {
		return nil, err
	}
	ttl, err := tokenTTL(req.GetTtl(), s.ttl)
	if err != nil {
		return nil, err
	}
	tok, jti, expiresAt, err := s.signCredential(auth.SignToken, p.AppID, req.GetIdentity(), ttl)
	if err != nil {
		return nil, err
	}
	return &identityv1.IssueTokenResponse{AccessToken: tok, ExpiresAt: timestamppb.New(expiresAt), TokenId: jti}, nil
}

// IssueResetGrant implements IdentityService.
func (s *Server) IssueResetGrant(ctx context.Context, req *identityv1.IssueResetGrantRequest) (*identityv1.IssueResetGrantResponse, error) {
	p, err := callerFor(ctx, req.GetIdentity())
	if err != nil {
		return nil, err
	}
	ttl, err := grantTTL(req.GetTtl())
	if err != nil {
		return nil, err
	}
	grant, jti, expiresAt, err := s.signCredential(auth.SignResetGrant, p.AppID, req.GetIdentity(), ttl)
	if err != nil {
		return nil, err
	}
	s.log.Info("reset grant issued", zap.String("app", p.AppID), zap.String("key_id", p.AppKeyID),
		zap.String("identity", req.GetIdentity()), zap.String("grant_id", jti), zap.Time("expires_at", expiresAt))
	return &identityv1.IssueResetGrantResponse{ResetGrant: grant, ExpiresAt: timestamppb.New(expiresAt), GrantId: jti}, nil
}

// signCredential issues a credential for identity in app, valid for ttl from now under a fresh
// id, and signs it with signFn under the current signing key. Access tokens and reset
// grants carry the same claims; signFn is what makes one or the other.
func (s *Server) signCredential(signFn func(*auth.Claims, string, ed25519.PrivateKey) (string, error), app, identity string, ttl time.Duration) (signed, jti string, expiresAt time.Time, err error) {
	jti, err = s.randomID(16)
	if err != nil {
		return "", "", time.Time{}, err
	}
	s.mu.RLock()
	signer := s.signer
	s.mu.RUnlock()
	now := s.now().Truncate(time.Second)
	expiresAt = now.Add(ttl)
	claims := &auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.issuer,
			Subject:   identity,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(expiresAt),
			ID:        jti,
		},
		App: app,
	}
	signed, err = signFn(claims, signer.GetKeyId(), ed25519.NewKeyFromSeed(signer.GetSeed()))
	if err != nil {
		return "", "", time.Time{}, err
	}
	return signed, jti, expiresAt, nil
}

// WhoAmI implements IdentityService.
func (s *Server) WhoAmI(ctx context.Context, _ *identityv1.WhoAmIRequest) (*identityv1.WhoAmIResponse, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	return &identityv1.WhoAmIResponse{Identity: p.Identity, AppId: p.AppID, TokenId: p.TokenID, ExpiresAt: timestamppb.New(p.ExpiresAt)}, nil
}
