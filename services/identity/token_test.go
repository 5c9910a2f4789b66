package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs/errstatus"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// codeOf is the gRPC code of a status or of a domain error.
func codeOf(err error) codes.Code {
	c, _ := errstatus.Code(err)
	return c
}

func serviceCtx(token string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), auth.ServiceTokenHeader, token)
}

// headerKID returns the kid of a compact JWS.
func headerKID(t *testing.T, tok string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.SplitN(tok, ".", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(h, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr.Kid
}

// forger signs tokens by hand with the service's real key, so each attack changes one
// thing at a time.
type forger struct {
	t    *testing.T
	kid  string
	priv ed25519.PrivateKey
}

func newForger(t *testing.T, e *env) *forger {
	keys, err := e.store.SigningKeys()
	if err != nil || len(keys) != 1 {
		t.Fatalf("signing keys: %v, %v", keys, err)
	}
	return &forger{t: t, kid: keys[0].GetKeyId(), priv: ed25519.NewKeyFromSeed(keys[0].GetSeed())}
}

func (f *forger) claims(sub, app string, now time.Time) *auth.Claims {
	return &auth.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    auth.DefaultIssuer,
			Subject:   sub,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
			ID:        "forged-token-id",
		},
		App: app,
	}
}

func (f *forger) sign(c *auth.Claims) string {
	tok, err := auth.SignToken(c, f.kid, f.priv)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

func TestAccessTokenAttacksAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	appID, key := e.newApp(t, "A")
	alice := e.user(t, key, "alice")
	f := newForger(t, e)
	now := e.clock.Now()
	good := f.sign(f.claims(alice, appID, now))
	if _, err := e.client.WhoAmI(as(good), &identityv1.WhoAmIRequest{}); err != nil {
		t.Fatalf("the forger's honest token is refused: %v", err)
	}
	pub := f.priv.Public().(ed25519.PublicKey)
	parts := strings.Split(good, ".")
	gresp, err := e.client.IssueResetGrant(as(key), &identityv1.IssueResetGrantRequest{Identity: alice})
	if err != nil {
		t.Fatal(err)
	}
	grant := gresp.GetResetGrant()

	hs256WithPublicKey := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, f.claims(alice, appID, now))
		tok.Header["kid"] = f.kid
		s, err := tok.SignedString([]byte(pub))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	algNone := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, f.claims(alice, appID, now))
		tok.Header["kid"] = f.kid
		s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	unknownKID := func() string {
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		s, err := auth.SignToken(f.claims(alice, appID, now), "nosuchkey", other)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	noKID := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, f.claims(alice, appID, now))
		s, err := tok.SignedString(f.priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	with := func(edit func(*auth.Claims)) string {
		c := f.claims(alice, appID, now)
		edit(c)
		return f.sign(c)
	}
	tampered := func() string {
		c := f.claims("u_"+strings.Repeat("b", 32), appID, now)
		body, _ := json.Marshal(c)
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(body) + "." + parts[2]
	}

	cases := []struct {
		name, token, msg string
		code             codes.Code
	}{
		{"garbage", "not-a-token", "malformed", codes.Unauthenticated},
		{"three empty parts", "..", "malformed", codes.Unauthenticated},
		{"bad base64", "a.b.c", "malformed", codes.Unauthenticated},
		{"alg none", algNone(), `algorithm "none" is not accepted`, codes.Unauthenticated},
		{"alg none without signature", parts[0] + "." + parts[1] + ".", "", codes.Unauthenticated},
		{"HS256 keyed with the public key", hs256WithPublicKey(), `algorithm "HS256" is not accepted`, codes.Unauthenticated},
		{"unknown kid", unknownKID(), "unknown signing key", codes.Unauthenticated},
		{"no kid", noKID(), "no key id", codes.Unauthenticated},
		{"tampered payload", tampered(), "signature is invalid", codes.Unauthenticated},
		{"expired", with(func(c *auth.Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(-2 * time.Hour))
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Hour))
		}), "expired", codes.Unauthenticated},
		{"not valid yet (nbf)", with(func(c *auth.Claims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour)) }), "not valid yet", codes.Unauthenticated},
		{"issued in the future", with(func(c *auth.Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(time.Hour))
			c.ExpiresAt = jwt.NewNumericDate(now.Add(2 * time.Hour))
		}), "not valid yet", codes.Unauthenticated},
		{"no expiry", with(func(c *auth.Claims) { c.ExpiresAt = nil }), "required claim", codes.Unauthenticated},
		{"no issued-at", with(func(c *auth.Claims) { c.IssuedAt = nil }), "issued-at", codes.Unauthenticated},
		{"lifetime over a day", with(func(c *auth.Claims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(48 * time.Hour)) }), "longer than", codes.Unauthenticated},
		{"wrong issuer", with(func(c *auth.Claims) { c.Issuer = "someone-else" }), "wrong issuer", codes.Unauthenticated},
		{"raw user id as subject", with(func(c *auth.Claims) { c.Subject = "alice" }), "subject", codes.Unauthenticated},
		{"group identity as subject", with(func(c *auth.Claims) { c.Subject = "g_" + alice[2:] }), "not a user identity", codes.Unauthenticated},
		{"no app", with(func(c *auth.Claims) { c.App = "" }), "no app claim", codes.Unauthenticated},
		{"no token id", with(func(c *auth.Claims) { c.ID = "" }), "token id", codes.Unauthenticated},
		{"an audience (what a reset grant has)", with(func(c *auth.Claims) { c.Audience = jwt.ClaimStrings{auth.ResetGrantAudience} }), "access token has an audience", codes.Unauthenticated},
		{"a reset grant instead of a token", grant, "a reset grant is not an access token", codes.Unauthenticated},
		{"app key instead of a token", key, "malformed", codes.Unauthenticated},
		{"admin credential instead of a token", testAdmin, "malformed", codes.Unauthenticated},
		{"no token at all", "", "missing credential", codes.Unauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client.WhoAmI(as(tc.token), &identityv1.WhoAmIRequest{})
			servicetest.MustCode(t, err, tc.code, tc.msg)
		})
	}

	t.Run("revoked", func(t *testing.T) {
		if _, err := e.client.RevokeTokens(as(key), &identityv1.RevokeTokensRequest{Identity: alice}); err != nil {
			t.Fatal(err)
		}
		_, err := e.client.WhoAmI(as(good), &identityv1.WhoAmIRequest{})
		servicetest.MustCode(t, err, codes.Unauthenticated, "revoked")
	})
	t.Run("authorization headers", func(t *testing.T) {
		fresh := e.token(t, key, e.user(t, key, "carol"))
		lower := metadata.NewOutgoingContext(context.Background(), metadata.Pairs("authorization", "bearer "+fresh))
		if _, err := e.client.WhoAmI(lower, &identityv1.WhoAmIRequest{}); err != nil {
			t.Errorf("lower-case scheme: %v", err)
		}
		for _, md := range []metadata.MD{
			metadata.Pairs("authorization", "Basic "+good),
			metadata.Pairs("authorization", good),
			metadata.Pairs("authorization", "Bearer "+good, "authorization", "Bearer "+good),
		} {
			_, err := e.client.WhoAmI(metadata.NewOutgoingContext(context.Background(), md), &identityv1.WhoAmIRequest{})
			if codeOf(err) != codes.Unauthenticated {
				t.Errorf("headers %v: %v, want Unauthenticated", md, err)
			}
		}
	})
}

// TestResetGrants: the grant IssueResetGrant returns verifies as a reset grant for the
// app and identity it names, for the lifetime asked; anything else (an access token, a
// grant with another audience, type or lifetime, expired, or signed by an unknown key)
// is refused as a grant.
func TestResetGrants(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	appID, key := e.newApp(t, "A")
	alice := e.user(t, key, "alice")
	v := auth.NewVerifier(e.srv, e.srv, "", e.clock.Now)
	ctx := context.Background()
	now := e.clock.Now()

	resp, err := e.client.IssueResetGrant(as(key), &identityv1.IssueResetGrantRequest{Identity: alice})
	if err != nil {
		t.Fatal(err)
	}
	g, err := v.VerifyResetGrant(ctx, resp.GetResetGrant())
	if err != nil {
		t.Fatal(err)
	}
	if g.AppID != appID || g.Identity != alice || g.ID != resp.GetGrantId() || !g.ExpiresAt.Equal(now.Add(auth.DefaultResetGrantTTL)) ||
		!resp.GetExpiresAt().AsTime().Equal(g.ExpiresAt) {
		t.Errorf("grant = %+v (reply %v); want alice's of app %s, expiring in %s", g, resp, appID, auth.DefaultResetGrantTTL)
	}
	long, err := e.client.IssueResetGrant(as(key), &identityv1.IssueResetGrantRequest{Identity: alice, Ttl: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if g2, err := v.VerifyResetGrant(ctx, long.GetResetGrant()); err != nil || !g2.ExpiresAt.Equal(now.Add(time.Hour)) || g2.ID == g.ID {
		t.Errorf("a one-hour grant = %+v, %v", g2, err)
	}

	f := newForger(t, e)
	grantClaims := func(edit func(*auth.Claims)) *auth.Claims {
		c := f.claims(alice, appID, now)
		c.ExpiresAt = jwt.NewNumericDate(now.Add(10 * time.Minute))
		edit(c)
		return c
	}
	signGrant := func(c *auth.Claims, kid string, priv ed25519.PrivateKey) string {
		s, err := auth.SignResetGrant(c, kid, priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	otherAudience := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, grantClaims(func(c *auth.Claims) { c.Audience = jwt.ClaimStrings{"umbra/other"} }))
		tok.Header["kid"], tok.Header["typ"] = f.kid, auth.ResetGrantType
		s, err := tok.SignedString(f.priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	cases := []struct{ name, grant, msg string }{
		{"an access token", e.token(t, key, alice), `reset_grant is not a reset grant (its type is "JWT"`},
		{"an access token forged with the grant's audience", f.sign(grantClaims(func(c *auth.Claims) { c.Audience = jwt.ClaimStrings{auth.ResetGrantAudience} })), "is not a reset grant"},
		{"the grant's type with another audience", otherAudience(), "wrong audience"},
		{"a lifetime over an hour", signGrant(grantClaims(func(c *auth.Claims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(2 * time.Hour)) }), f.kid, f.priv), "lives longer than 1h0m0s"},
		{"expired", signGrant(grantClaims(func(c *auth.Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(-20 * time.Minute))
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-10 * time.Minute))
		}), f.kid, f.priv), "reset grant has expired"},
		{"an unknown signing key", signGrant(grantClaims(func(*auth.Claims) {}), "nosuchkey", stranger), "unknown signing key"},
		{"signed by another key under the real key id", signGrant(grantClaims(func(*auth.Claims) {}), f.kid, stranger), "signature is invalid"},
		{"no grant id", signGrant(grantClaims(func(c *auth.Claims) { c.ID = "" }), f.kid, f.priv), "no grant id"},
		{"no app", signGrant(grantClaims(func(c *auth.Claims) { c.App = "" }), f.kid, f.priv), "no app claim"},
		{"a group as subject", signGrant(grantClaims(func(c *auth.Claims) { c.Subject = "g_" + alice[2:] }), f.kid, f.priv), "not a user identity"},
		{"garbage", "not.a.grant", "malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.VerifyResetGrant(ctx, tc.grant)
			if codeOf(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("VerifyResetGrant: %v; want PermissionDenied with %q", err, tc.msg)
			}
		})
	}
	if _, err := v.VerifyResetGrant(ctx, signGrant(grantClaims(func(*auth.Claims) {}), f.kid, f.priv)); err != nil {
		t.Errorf("the forger's honest grant is refused, so the cases above prove nothing: %v", err)
	}
}

// TestRevocationFeedOverGRPC follows the feed the way other services do: over gRPC with
// the service token, within the poll bound, and failing closed when it goes stale.
func TestRevocationFeedOverGRPC(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	appID, key := e.newApp(t, "A")
	alice, bob := e.user(t, key, "alice"), e.user(t, key, "bob")
	conn := e.conn
	remote := auth.Remote{Client: identityv1.NewIdentityServiceClient(conn)}
	feed := auth.NewRevocationFeed(serviceTokenSource{remote}, e.clock.Now)

	issued := e.clock.Now()
	if err := feed.CheckRevoked(context.Background(), appID, alice, issued); codeOf(err) != codes.Unavailable {
		t.Errorf("before the first sync: %v, want Unavailable", err)
	}
	if err := feed.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := feed.CheckRevoked(context.Background(), appID, alice, issued); err != nil {
		t.Errorf("nothing revoked yet: %v", err)
	}
	if _, err := e.client.RevokeTokens(as(key), &identityv1.RevokeTokensRequest{Identity: alice}); err != nil {
		t.Fatal(err)
	}
	if err := feed.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := feed.CheckRevoked(context.Background(), appID, alice, issued); codeOf(err) != codes.Unauthenticated {
		t.Errorf("after the revocation: %v, want Unauthenticated", err)
	}
	if err := feed.CheckRevoked(context.Background(), appID, bob, issued); err != nil {
		t.Errorf("bob was not revoked: %v", err)
	}
	if err := feed.CheckRevoked(context.Background(), appID, alice, issued.Add(2*time.Second)); err != nil {
		t.Errorf("a token issued after the revocation: %v", err)
	}
	// No word from identity for longer than MaxStaleness: every token is refused.
	e.clock.Add(feed.MaxStaleness + time.Second)
	if err := feed.CheckRevoked(context.Background(), appID, bob, e.clock.Now()); codeOf(err) != codes.Unavailable {
		t.Errorf("stale feed: %v, want Unavailable", err)
	}

	// The remote key set serves the same keys as the local one.
	remoteKeys, err := remote.VerificationKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	localKeys, _ := e.srv.VerificationKeys(context.Background())
	if len(remoteKeys) != 1 || len(localKeys) != 1 {
		t.Fatalf("keys: remote %d local %d", len(remoteKeys), len(localKeys))
	}
	for kid, k := range localKeys {
		if !k.Equal(remoteKeys[kid]) {
			t.Errorf("key %s differs over gRPC", kid)
		}
	}
}

// serviceTokenSource adds the service token to each feed call, as grpcclient does for a
// service's connection.
type serviceTokenSource struct{ r auth.Remote }

func (s serviceTokenSource) ListRevocations(ctx context.Context, req *identityv1.ListRevocationsRequest) (*identityv1.ListRevocationsResponse, error) {
	return s.r.ListRevocations(metadata.AppendToOutgoingContext(ctx, auth.ServiceTokenHeader, testServiceToken), req)
}
