package messaging

import (
	"context"

	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// The services the messaging service calls. cards.go and groups.go hold their gRPC
// clients, what a server without them answers, and the caches of their answers.

// Cards is what the messaging service asks the card service: whose card an ENCRYPTED
// message's sender_card_id is. Errors are returned as the card service gave them (a
// gRPC status); a card service that cannot answer gives an errs.ErrUnavailable.
type Cards interface {
	LookupCardOwner(ctx context.Context, req *cardv1.LookupCardOwnerRequest) (*cardv1.LookupCardOwnerResponse, error)
}

// Groups is what the messaging service asks the group service, the authority on who may
// send to and read a group conversation. Errors are returned as the group service gave
// them (a gRPC status, with its details), so they reach the client unchanged; a group
// service that cannot answer gives an errs.ErrUnavailable.
type Groups interface {
	AuthorizeSend(ctx context.Context, req *groupv1.AuthorizeSendRequest) (*groupv1.AuthorizeSendResponse, error)
	CheckMembership(ctx context.Context, req *groupv1.CheckMembershipRequest) (*groupv1.CheckMembershipResponse, error)
	ListMemberIdentities(ctx context.Context, req *groupv1.ListMemberIdentitiesRequest) (*groupv1.ListMemberIdentitiesResponse, error)
}
