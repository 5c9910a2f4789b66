package auth

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
)

// Token parameters shared by the issuer (the identity service) and every verifier.
const (
	// Algorithm is the only JWS algorithm access tokens use or verifiers accept.
	Algorithm = "EdDSA"
	// DefaultIssuer is the "iss" of access tokens unless configured otherwise.
	DefaultIssuer = "umbra"
	// DefaultTokenTTL is the lifetime of a token issued without one.
	DefaultTokenTTL = time.Hour
	// MinTokenTTL and MaxTokenTTL bound the lifetime an app may ask for.
	MinTokenTTL = time.Minute
	MaxTokenTTL = 24 * time.Hour
	// Leeway is the clock skew tolerated between the issuer and a verifier.
	Leeway = 5 * time.Second
)

// Claims are the claims of an access token: sub is the identity, app its app.
type Claims struct {
	jwt.RegisteredClaims
	App string `json:"app"`
}

// KeySet gives the public keys that verify access tokens, by key id.
type KeySet interface {
	VerificationKeys(ctx context.Context) (map[string]ed25519.PublicKey, error)
}

// RevocationChecker says whether a token issued at issuedAt for identity in app has
// been revoked. It returns an errs.ErrUnauthenticated when it has, and an
// errs.ErrUnavailable when it cannot tell.
type RevocationChecker interface {
	CheckRevoked(ctx context.Context, app, identity string, issuedAt time.Time) error
}

// Verifier verifies access tokens against a KeySet, which it caches: it refetches when a
// token names a key id it does not know (at most once per RefetchInterval, so tokens
// with made-up key ids cannot make it hammer the identity service) and every
// RefreshInterval in any case, so that unpublished keys stop verifying.
type Verifier struct {
	keys        KeySet
	revocations RevocationChecker
	issuer      string
	now         func() time.Time

	// RefetchInterval is the least time between two fetches on unknown key ids.
	RefetchInterval time.Duration
	// RefreshInterval is the most time a fetched key set is used.
	RefreshInterval time.Duration

	// CacheSize bounds the verified tokens remembered, so that a client sending the
	// same token again costs a map lookup and the revocation check instead of a
	// signature verification.
	CacheSize int

	fetchMu   sync.Mutex // serialises fetches
	mu        sync.RWMutex
	cached    map[string]ed25519.PublicKey
	fetchedAt time.Time

	verifiedMu sync.Mutex
	verified   map[string]*Principal // by raw token; each entry valid until its ExpiresAt
}

// NewVerifier returns a Verifier. revocations may not be nil: every service honours
// revocations. now may be nil for time.Now.
func NewVerifier(keys KeySet, revocations RevocationChecker, issuer string, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	if issuer == "" {
		issuer = DefaultIssuer
	}
	return &Verifier{
		keys:            keys,
		revocations:     revocations,
		issuer:          issuer,
		now:             now,
		RefetchInterval: time.Second,
		RefreshInterval: 5 * time.Minute,
		CacheSize:       1 << 16,
		verified:        map[string]*Principal{},
	}
}

// VerifyToken checks raw and returns its principal. Every failure is an
// errs.ErrUnauthenticated that says what was wrong, except an identity service that
// cannot be reached, which is an errs.ErrUnavailable.
func (v *Verifier) VerifyToken(ctx context.Context, raw string) (*Principal, error) {
	if p := v.remembered(raw); p != nil {
		// The signature and claims were checked before; what can change is the clock
		// and revocations.
		if err := v.revocations.CheckRevoked(ctx, p.AppID, p.Identity, p.IssuedAt); err != nil {
			return nil, err
		}
		cp := *p
		return &cp, nil
	}
	p, err := v.verify(ctx, raw)
	if err != nil {
		return nil, err
	}
	v.remember(raw, p)
	cp := *p
	return &cp, nil
}

// remembered returns the principal of a token verified before and not yet expired.
func (v *Verifier) remembered(raw string) *Principal {
	v.verifiedMu.Lock()
	defer v.verifiedMu.Unlock()
	p, ok := v.verified[raw]
	if !ok {
		return nil
	}
	if !v.now().Before(p.ExpiresAt.Add(Leeway)) {
		delete(v.verified, raw)
		return nil
	}
	return p
}

func (v *Verifier) remember(raw string, p *Principal) {
	v.verifiedMu.Lock()
	defer v.verifiedMu.Unlock()
	if len(v.verified) >= v.CacheSize {
		now := v.now()
		for k, q := range v.verified {
			if !now.Before(q.ExpiresAt.Add(Leeway)) {
				delete(v.verified, k)
			}
		}
		// Still full of live tokens: forget an arbitrary half rather than grow.
		for k := range v.verified {
			if len(v.verified) < v.CacheSize/2 {
				break
			}
			delete(v.verified, k)
		}
	}
	v.verified[raw] = p
}

// verify checks a token not seen before: its signature, claims and revocation.
func (v *Verifier) verify(ctx context.Context, raw string) (*Principal, error) {
	// Say plainly when the algorithm is wrong ("none", or HS256 keyed with the public
	// key): the parser below refuses it too, but calls it a bad signature.
	if t, _, err := jwt.NewParser().ParseUnverified(raw, &Claims{}); err == nil {
		if t.Method.Alg() != Algorithm {
			return nil, errs.Unauthenticatedf("access token algorithm %q is not accepted: tokens are signed with %s", t.Method.Alg(), Algorithm)
		}
		if typ, _ := t.Header["typ"].(string); typ == ResetGrantType {
			return nil, errs.Unauthenticatedf("a reset grant is not an access token: send it as PublishCardRequest.reset_grant, with the user's access token")
		}
	}
	var c Claims
	_, err := v.parser().ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errs.Unauthenticatedf("access token has no key id (kid)")
		}
		return v.key(ctx, kid)
	})
	if err != nil {
		return nil, accessTokenUse.parseError(err)
	}
	if c.IssuedAt == nil {
		return nil, errs.Unauthenticatedf("access token has no issued-at (iat) claim")
	}
	if c.ExpiresAt.Sub(c.IssuedAt.Time) > MaxTokenTTL {
		return nil, errs.Unauthenticatedf("access token lives longer than %s", MaxTokenTTL)
	}
	if err := ident.ValidUser("access token subject", c.Subject); err != nil {
		return nil, errs.Unauthenticatedf("%v", err)
	}
	if c.App == "" {
		return nil, errs.Unauthenticatedf("access token has no app claim")
	}
	if len(c.Audience) > 0 {
		// Access tokens have no audience; anything signed with one (a reset grant) is
		// for another use, whatever its header says.
		return nil, errs.Unauthenticatedf("access token has an audience (aud %v): access tokens have none; a reset grant is not an access token", []string(c.Audience))
	}
	if c.ID == "" {
		return nil, errs.Unauthenticatedf("access token has no token id (jti)")
	}
	if err := v.revocations.CheckRevoked(ctx, c.App, c.Subject, c.IssuedAt.Time); err != nil {
		return nil, err
	}
	return &Principal{
		Policy:    AccessToken,
		AppID:     c.App,
		Identity:  c.Subject,
		TokenID:   c.ID,
		IssuedAt:  c.IssuedAt.Time,
		ExpiresAt: c.ExpiresAt.Time,
	}, nil
}

// parser returns a parser that checks, besides opts, what every JWT the identity
// service signs must hold: the one algorithm, an expiry, an issued-at that is not in the
// future, and this verifier's issuer, all on its clock with Leeway.
func (v *Verifier) parser(opts ...jwt.ParserOption) *jwt.Parser {
	return jwt.NewParser(append([]jwt.ParserOption{
		jwt.WithValidMethods([]string{Algorithm}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(v.issuer),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(v.now),
	}, opts...)...)
}

// accessTokenUse tells parse failures of an access token as failed authentication.
var accessTokenUse = jwtUse{name: "access token", refuse: errs.Unauthenticatedf}

// jwtUse is one use of the identity service's signed JWTs, and says how a parse
// failure of it is told to the caller: access tokens and reset grants fail for the
// same reasons, but are named differently and refused with different codes.
type jwtUse struct {
	name   string                                       // how messages name it: "access token"
	refuse func(format string, args ...any) *errs.Error // the errs constructor it is refused with
	// afterExpired ends the message of an expired one: what the caller can do about it.
	afterExpired string
	// audience is the audience the parser demands; "" when it demands none.
	audience string
}

// parseError turns a parse failure into a message for the caller. An errs.Error (from
// the key lookup) passes through as it is.
func (u jwtUse) parseError(err error) error {
	var e *errs.Error
	if errors.As(err, &e) {
		return e
	}
	var msg string
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		msg = "is malformed"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		msg = "cannot be verified"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		msg = "signature is invalid"
	case errors.Is(err, jwt.ErrTokenExpired):
		msg = "has expired" + u.afterExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		msg = "is not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		msg = "has the wrong issuer"
	case u.audience != "" && errors.Is(err, jwt.ErrTokenInvalidAudience):
		msg = fmt.Sprintf("has the wrong audience: want %q", u.audience)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		msg = "lacks a required claim"
	default:
		msg = "is invalid"
	}
	return u.refuse("%s %s", u.name, msg)
}

// key returns the public key with id kid, refetching the key set when it is unknown.
func (v *Verifier) key(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	v.mu.RLock()
	k, ok := v.cached[kid]
	fresh := v.now().Sub(v.fetchedAt) < v.RefreshInterval
	mayRefetch := v.now().Sub(v.fetchedAt) >= v.RefetchInterval
	v.mu.RUnlock()
	if ok && fresh {
		return k, nil
	}
	if !ok && !mayRefetch {
		return nil, errs.Unauthenticatedf("access token names an unknown signing key")
	}
	if err := v.refetch(ctx); err != nil {
		if ok {
			// A known key whose refresh failed still verifies: refreshing only drops
			// unpublished keys, and revocations fail closed on their own.
			return k, nil
		}
		return nil, err
	}
	v.mu.RLock()
	k, ok = v.cached[kid]
	v.mu.RUnlock()
	if !ok {
		return nil, errs.Unauthenticatedf("access token names an unknown signing key")
	}
	return k, nil
}

func (v *Verifier) refetch(ctx context.Context) error {
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	v.mu.RLock()
	recent := !v.fetchedAt.IsZero() && v.now().Sub(v.fetchedAt) < v.RefetchInterval
	v.mu.RUnlock()
	if recent {
		return nil // another caller just fetched
	}
	keys, err := v.keys.VerificationKeys(ctx)
	if err != nil {
		return errs.Unavailablef("cannot fetch token signing keys: %v", err)
	}
	v.mu.Lock()
	v.cached, v.fetchedAt = keys, v.now()
	v.mu.Unlock()
	return nil
}

// SignToken signs claims with key under key id kid. Only the identity service calls it;
// it lives here so that issuer and verifiers share one definition of a token.
func SignToken(c *Claims, kid string, key ed25519.PrivateKey) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = kid
	s, err := t.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("auth: sign token: %w", err)
	}
	return s, nil
}
