package identity

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// RevokeTokens implements IdentityService.
func (s *Server) RevokeTokens(ctx context.Context, req *identityv1.RevokeTokensRequest) (*identityv1.RevokeTokensResponse, error) {
	p, err := callerFor(ctx, req.GetIdentity())
	if err != nil {
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
