package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	identitystoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/identity/v1"
)

const (
	appIDPrefix  = ident.AppPrefix
	appIDLen     = 26 // 16 random bytes in base32
	keyIDLen     = 16 // 10 random bytes in base32
	apiKeyPrefix = auth.AppKeyPrefix
	secretLen    = 32
)

// b32 is unpadded lower-case base32, the alphabet of ids and identities.
var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Server implements umbra.identity.v1.IdentityService. It is also the app-key verifier,
// the key set and the revocation checker of a process that hosts the identity service.
type Server struct {
	identityv1.UnimplementedIdentityServiceServer
	store  Store
	log    *zap.Logger
	issuer string
	ttl    time.Duration
	now    func() time.Time
	rand   io.Reader

	mu     sync.RWMutex // guards signer
	signer *identitystoragev1.SigningKeyRecord
}

var (
	_ identityv1.IdentityServiceServer = (*Server)(nil)
	_ auth.AppKeyVerifier              = (*Server)(nil)
	_ auth.KeySet                      = (*Server)(nil)
	_ auth.RevocationChecker           = (*Server)(nil)
)

// New returns a Server over store, creating the first signing key if there is none.
// A nil log discards logs.
func New(store Store, cfg Config, log *zap.Logger) (*Server, error) {
	if log == nil {
		log = zap.NewNop()
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{store: store, log: log, issuer: cfg.Issuer, ttl: cfg.DefaultTTL, now: cfg.Clock, rand: cfg.Rand}
	key, err := s.newSigningKey()
	if err != nil {
		return nil, err
	}
	if _, err := store.AddSigningKey(key, time.Time{}, true); err != nil {
		return nil, fmt.Errorf("identity: first signing key: %w", err)
	}
	if err := s.loadSigner(); err != nil {
		return nil, err
	}
	return s, nil
}

// Register registers the service on g.
func (s *Server) Register(g grpc.ServiceRegistrar) { identityv1.RegisterIdentityServiceServer(g, s) }

func (s *Server) randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.rand, b); err != nil {
		return nil, fmt.Errorf("identity: randomness: %w", err)
	}
	return b, nil
}

func (s *Server) randomID(n int) (string, error) {
	b, err := s.randomBytes(n)
	if err != nil {
		return "", err
	}
	return b32.EncodeToString(b), nil
}

// newAppKey returns a key record and the API key to show once.
func (s *Server) newAppKey(appID string) (*identitystoragev1.AppKeyRecord, string, error) {
	keyID, err := s.randomID(10)
	if err != nil {
		return nil, "", err
	}
	secret, err := s.randomBytes(secretLen)
	if err != nil {
		return nil, "", err
	}
	h := sha256.Sum256(secret)
	rec := &identitystoragev1.AppKeyRecord{KeyId: keyID, AppId: appID, SecretHash: h[:], CreatedAt: timestamppb.New(s.now())}
	return rec, apiKeyPrefix + keyID + "_" + base64.RawURLEncoding.EncodeToString(secret), nil
}

// CreateApp implements IdentityService.
func (s *Server) CreateApp(_ context.Context, req *identityv1.CreateAppRequest) (*identityv1.CreateAppResponse, error) {
	if err := validDisplayName(req.GetDisplayName()); err != nil {
		return nil, err
	}
	id, err := s.randomID(16)
	if err != nil {
		return nil, err
	}
	secret, err := s.randomBytes(32)
	if err != nil {
		return nil, err
	}
	app := &identitystoragev1.AppRecord{AppId: appIDPrefix + id, DisplayName: req.GetDisplayName(), CreatedAt: timestamppb.New(s.now()), IdentitySecret: secret}
	key, apiKey, err := s.newAppKey(app.AppId)
	if err != nil {
		return nil, err
	}
	if err := s.store.CreateApp(app, key); err != nil {
		return nil, err
	}
	s.log.Info("app created", zap.String("app", app.AppId), zap.String("key_id", key.KeyId))
	return &identityv1.CreateAppResponse{App: appView(app, []*identitystoragev1.AppKeyRecord{key}), ApiKey: apiKey}, nil
}

func appView(app *identitystoragev1.AppRecord, keys []*identitystoragev1.AppKeyRecord) *identityv1.App {
	v := &identityv1.App{AppId: app.GetAppId(), DisplayName: app.GetDisplayName(), CreatedAt: app.GetCreatedAt()}
	for _, k := range keys {
		v.Keys = append(v.Keys, keyView(k))
	}
	return v
}

func keyView(k *identitystoragev1.AppKeyRecord) *identityv1.AppKey {
	return &identityv1.AppKey{KeyId: k.GetKeyId(), CreatedAt: k.GetCreatedAt(), RevokedAt: k.GetRevokedAt()}
}

// GetApp implements IdentityService.
func (s *Server) GetApp(_ context.Context, req *identityv1.GetAppRequest) (*identityv1.GetAppResponse, error) {
	if err := validAppID(req.GetAppId()); err != nil {
		return nil, err
	}
	app, keys, err := s.store.App(req.GetAppId())
	if err != nil {
		return nil, err
	}
	return &identityv1.GetAppResponse{App: appView(app, keys)}, nil
}

// CreateAppKey implements IdentityService.
func (s *Server) CreateAppKey(_ context.Context, req *identityv1.CreateAppKeyRequest) (*identityv1.CreateAppKeyResponse, error) {
	if err := validAppID(req.GetAppId()); err != nil {
		return nil, err
	}
	key, apiKey, err := s.newAppKey(req.GetAppId())
	if err != nil {
		return nil, err
	}
	if err := s.store.AddAppKey(key); err != nil {
		return nil, err
	}
	s.log.Info("app key created", zap.String("app", key.AppId), zap.String("key_id", key.KeyId))
	return &identityv1.CreateAppKeyResponse{Key: keyView(key), ApiKey: apiKey}, nil
}

// RevokeAppKey implements IdentityService.
func (s *Server) RevokeAppKey(_ context.Context, req *identityv1.RevokeAppKeyRequest) (*identityv1.RevokeAppKeyResponse, error) {
	if err := validAppID(req.GetAppId()); err != nil {
		return nil, err
	}
	if err := validKeyID(req.GetKeyId()); err != nil {
		return nil, err
	}
	key, err := s.store.RevokeAppKey(req.GetAppId(), req.GetKeyId(), s.now())
	if err != nil {
		return nil, err
	}
	s.log.Info("app key revoked", zap.String("app", key.AppId), zap.String("key_id", key.KeyId))
	return &identityv1.RevokeAppKeyResponse{Key: keyView(key)}, nil
}

// VerifyAppKey implements auth.AppKeyVerifier: the key must be well formed, known, of
// an existing app, not revoked, and its secret must match the stored hash.
func (s *Server) VerifyAppKey(_ context.Context, apiKey string) (*auth.Principal, error) {
	rest, ok := strings.CutPrefix(apiKey, apiKeyPrefix)
	keyID, secretB64, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || validKeyID(keyID) != nil {
		return nil, errs.Unauthenticatedf("malformed app API key: want %s<key id>_<secret>", apiKeyPrefix)
	}
	secret, err := base64.RawURLEncoding.DecodeString(secretB64)
	if err != nil || len(secret) != secretLen {
		return nil, errs.Unauthenticatedf("malformed app API key secret")
	}
	key, err := s.store.AppKey(keyID)
	if errors.Is(err, errs.ErrNotFound) {
		return nil, errs.Unauthenticatedf("unknown app API key")
	}
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(secret)
	if subtle.ConstantTimeCompare(h[:], key.GetSecretHash()) != 1 {
		return nil, errs.Unauthenticatedf("unknown app API key")
	}
	if key.GetRevokedAt() != nil {
		return nil, errs.Unauthenticatedf("app API key %s was revoked", keyID)
	}
	return &auth.Principal{Policy: auth.AppKey, AppID: key.GetAppId(), AppKeyID: keyID}, nil
}

// IssueToken implements IdentityService.
func (s *Server) IssueToken(ctx context.Context, req *identityv1.IssueTokenRequest) (*identityv1.IssueTokenResponse, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := ident.ValidUser("identity", req.GetIdentity()); err != nil {
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
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := ident.ValidUser("identity", req.GetIdentity()); err != nil {
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

// ResolveIdentities implements IdentityService.
func (s *Server) ResolveIdentities(ctx context.Context, req *identityv1.ResolveIdentitiesRequest) (*identityv1.ResolveIdentitiesResponse, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validExternalIDs(req.GetUids(), req.GetGuids()); err != nil {
		return nil, err
	}
	app, _, err := s.store.App(p.AppID)
	if err != nil {
		return nil, err
	}
	resp := &identityv1.ResolveIdentitiesResponse{Users: map[string]string{}, Groups: map[string]string{}}
	for _, uid := range req.GetUids() {
		resp.Users[uid] = deriveIdentity(app.GetIdentitySecret(), ident.UserPrefix, uid)
	}
	for _, guid := range req.GetGuids() {
		resp.Groups[guid] = deriveIdentity(app.GetIdentitySecret(), ident.GroupPrefix, guid)
	}
	return resp, nil
}

// identityLabel separates identity derivation from any other use of the app secret.
const identityLabel = "umbra/v1/identity"

// deriveIdentity is prefix + base32(HMAC-SHA256(secret, label 0 prefix 0 id)[:20]).
func deriveIdentity(secret []byte, prefix, id string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(identityLabel))
	m.Write([]byte{0})
	m.Write([]byte(prefix))
	m.Write([]byte{0})
	m.Write([]byte(id))
	return prefix + b32.EncodeToString(m.Sum(nil)[:20])
}

// RevokeTokens implements IdentityService.
func (s *Server) RevokeTokens(ctx context.Context, req *identityv1.RevokeTokensRequest) (*identityv1.RevokeTokensResponse, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := ident.ValidUser("identity", req.GetIdentity()); err != nil {
		return nil, err
	}
	before, err := revokeBefore(req.GetBefore(), s.now())
	if err != nil {
		return nil, err
	}
	rec, err := s.store.Revoke(p.AppID, req.GetIdentity(), before)
	if err != nil {
		return nil, err
	}
	s.log.Info("tokens revoked", zap.String("app", p.AppID), zap.String("identity", req.GetIdentity()), zap.Time("before", rec.GetBefore().AsTime()))
	return &identityv1.RevokeTokensResponse{RevokedBefore: rec.GetBefore()}, nil
}

// CheckRevoked implements auth.RevocationChecker from the store itself.
func (s *Server) CheckRevoked(_ context.Context, app, identity string, issuedAt time.Time) error {
	rec, err := s.store.Revocation(app, identity)
	switch {
	case errors.Is(err, errs.ErrNotFound):
		return nil
	case err != nil:
		return err
	case issuedAt.Before(rec.GetBefore().AsTime()):
		return errs.Unauthenticatedf("access token has been revoked")
	}
	return nil
}

// ListRevocations implements IdentityService.
func (s *Server) ListRevocations(_ context.Context, req *identityv1.ListRevocationsRequest) (*identityv1.ListRevocationsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = DefaultRevocationPage
	case size > MaxRevocationPage:
		return nil, errs.Invalidf("page_size %d is over the maximum %d", size, MaxRevocationPage)
	}
	recs, latest, err := s.store.Revocations(req.GetAfterSequence(), size)
	if err != nil {
		return nil, err
	}
	resp := &identityv1.ListRevocationsResponse{LatestSequence: latest, MaxTokenTtl: durationpb.New(auth.MaxTokenTTL)}
	for _, r := range recs {
		resp.Revocations = append(resp.Revocations, &identityv1.Revocation{Sequence: r.GetSequence(), AppId: r.GetAppId(), Identity: r.GetIdentity(), Before: r.GetBefore()})
	}
	return resp, nil
}

// WhoAmI implements IdentityService.
func (s *Server) WhoAmI(ctx context.Context, _ *identityv1.WhoAmIRequest) (*identityv1.WhoAmIResponse, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	return &identityv1.WhoAmIResponse{Identity: p.Identity, AppId: p.AppID, TokenId: p.TokenID, ExpiresAt: timestamppb.New(p.ExpiresAt)}, nil
}
