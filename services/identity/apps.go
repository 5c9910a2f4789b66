package identity

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	identitystoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/identity/v1"
)

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
