package auth

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
)

// Reset grants authorise the publication of a card that no earlier card of its
// identity endorses (a reset after every key was lost, or a new start after a
// revocation). Only the app backend obtains one (IdentityService.IssueResetGrant, with
// its API key); the card service accepts each once. A grant is a JWS signed by the
// identity service's token-signing key, like an access token, but it carries its own
// JOSE type and audience: VerifyToken refuses anything with an audience, and
// VerifyResetGrant anything without exactly the grant's type and audience, so neither
// can ever stand in for the other.
const (
	// ResetGrantType is the JOSE "typ" header of a reset grant.
	ResetGrantType = "umbra-reset-grant+jwt"
	// ResetGrantAudience is the "aud" of a reset grant: the card service's reset.
	ResetGrantAudience = "umbra/card-reset"
	// DefaultResetGrantTTL is the lifetime of a grant issued without one.
	DefaultResetGrantTTL = 10 * time.Minute
	// MinResetGrantTTL and MaxResetGrantTTL bound the lifetime an app may ask for.
	MinResetGrantTTL = time.Minute
	MaxResetGrantTTL = time.Hour
	// MaxResetGrantSize bounds a grant's encoding; a real one is about 400 bytes.
	MaxResetGrantSize = 4096
)

// resetGrantUse tells parse failures of a reset grant as refused permission: the grant
// is not the call's credential (the access token is, and it is fine).
var resetGrantUse = jwtUse{
	name:         "reset grant",
	refuse:       errs.Permissionf,
	afterExpired: ": ask the app backend for a new one",
	audience:     ResetGrantAudience,
}

// ResetGrant is a verified reset grant.
type ResetGrant struct {
	// AppID and Identity are whose card the grant lets publish.
	AppID    string
	Identity string
	// ID is the grant's jti, which the card service records as spent.
	ID        string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// SignResetGrant signs the claims of a reset grant (their audience is set here) with
// key under key id kid. Only the identity service calls it.
func SignResetGrant(c *Claims, kid string, key ed25519.PrivateKey) (string, error) {
	c.Audience = jwt.ClaimStrings{ResetGrantAudience}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = kid
	t.Header["typ"] = ResetGrantType
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("auth: sign reset grant: %w", err)
	}
	return s, nil
}

// VerifyResetGrant checks raw as a reset grant, with the verifier's cached key set,
// and returns it. It does not check what the grant is for (the caller compares the
// app and identity with its own caller's) nor whether it was used before (the card
// service records spent grants). Every failure is an errs.ErrPermission that says what
// was wrong (the grant is not the call's credential: the access token is, and it is
// fine), except an identity service that cannot be reached (errs.ErrUnavailable).
func (v *Verifier) VerifyResetGrant(ctx context.Context, raw string) (*ResetGrant, error) {
	if len(raw) > MaxResetGrantSize {
		return nil, errs.Permissionf("reset_grant is %d bytes; a reset grant is at most %d", len(raw), MaxResetGrantSize)
	}
	t, _, err := jwt.NewParser().ParseUnverified(raw, &Claims{})
	if err != nil {
		return nil, errs.Permissionf("reset_grant is malformed: want the grant IssueResetGrant returned")
	}
	if typ, _ := t.Header["typ"].(string); typ != ResetGrantType {
		return nil, errs.Permissionf("reset_grant is not a reset grant (its type is %q, not %q): an access token cannot authorise a reset; the app backend obtains grants with IssueResetGrant", typ, ResetGrantType)
	}
	if t.Method.Alg() != Algorithm {
		return nil, errs.Permissionf("reset grant algorithm %q is not accepted: grants are signed with %s", t.Method.Alg(), Algorithm)
	}
	var c Claims
	_, err = v.parser(jwt.WithAudience(ResetGrantAudience)).ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errs.Permissionf("reset grant has no key id (kid)")
		}
		k, err := v.key(ctx, kid)
		if errors.Is(err, errs.ErrUnauthenticated) {
			return nil, errs.Permissionf("reset grant names an unknown signing key")
		}
		return k, err
	})
	if err != nil {
		return nil, resetGrantUse.parseError(err)
	}
	switch {
	case c.IssuedAt == nil:
		return nil, errs.Permissionf("reset grant has no issued-at (iat) claim")
	case c.ExpiresAt.Sub(c.IssuedAt.Time) > MaxResetGrantTTL:
		return nil, errs.Permissionf("reset grant lives longer than %s", MaxResetGrantTTL)
	case len(c.Audience) != 1:
		return nil, errs.Permissionf("reset grant has %d audiences; want only %q", len(c.Audience), ResetGrantAudience)
	case c.App == "":
		return nil, errs.Permissionf("reset grant has no app claim")
	case c.ID == "":
		return nil, errs.Permissionf("reset grant has no grant id (jti)")
	}
	if err := ident.ValidUser("reset grant subject", c.Subject); err != nil {
		return nil, errs.Permissionf("%v", err)
	}
	return &ResetGrant{AppID: c.App, Identity: c.Subject, ID: c.ID, IssuedAt: c.IssuedAt.Time, ExpiresAt: c.ExpiresAt.Time}, nil
}
