package group

import (
	"context"

	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/internal/outbox"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// Cards is what the group service asks the card service: the members' active cards
// (to check a commit) and the feed of card changes (to mark rotation required).
// cardv1.CardServiceClient is one.
type Cards interface {
	LookupActiveCards(ctx context.Context, in *cardv1.LookupActiveCardsRequest, opts ...grpc.CallOption) (*cardv1.LookupActiveCardsResponse, error)
	ListCardEvents(ctx context.Context, in *cardv1.ListCardEventsRequest, opts ...grpc.CallOption) (*cardv1.ListCardEventsResponse, error)
}

// Events is where the group service delivers its events: the messaging service's
// PublishEvent. messagingv1.MessagingServiceClient is one.
type Events = outbox.Publisher
