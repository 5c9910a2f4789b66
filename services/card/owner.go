package card

import (
	"context"

	"github.com/umbra-e2ee/umbra/pkg/ident"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// LookupCardOwner implements CardService: whose card card_id is, for the messaging
// service's check of a message's sender card.
func (s *Server) LookupCardOwner(_ context.Context, req *cardv1.LookupCardOwnerRequest) (*cardv1.LookupCardOwnerResponse, error) {
	if err := ident.ValidApp("app_id", req.GetAppId()); err != nil {
		return nil, err
	}
	if err := validCardID("card_id", req.GetCardId()); err != nil {
		return nil, err
	}
	rec, err := s.store.Card(req.GetAppId(), req.GetCardId())
	if err != nil {
		return nil, err
	}
	return &cardv1.LookupCardOwnerResponse{Identity: rec.GetIdentity(), Status: statuses[rec.GetStatus()]}, nil
}
