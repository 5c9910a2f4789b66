package identity

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

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
