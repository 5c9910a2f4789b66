package messaging

import (
	"context"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// PublishEvent implements MessagingService.
func (s *Server) PublishEvent(ctx context.Context, req *messagingv1.PublishEventRequest) (*messagingv1.PublishEventResponse, error) {
	if err := ident.ValidApp("app_id", req.GetAppId()); err != nil {
		return nil, err
	}
	if err := validKey("event_id", req.GetEventId(), MaxEventIDLen); err != nil {
		return nil, err
	}
	if err := validEventType(req.GetType()); err != nil {
		return nil, err
	}
	if g := req.GetGroupId(); g != "" {
		if err := ident.ValidGroup("group_id", g); err != nil {
			return nil, err
		}
	}
	if n := len(req.GetPayload()); n > MaxEventPayload {
		return nil, errs.TooLargef("payload is %d bytes; an event's payload is at most %d", n, MaxEventPayload)
	}
	recipients, err := validRecipients(req.GetRecipients())
	if err != nil {
		return nil, err
	}
	op := &EventOp{
		AppID:      req.GetAppId(),
		EventID:    req.GetEventId(),
		Type:       req.GetType(),
		GroupID:    req.GetGroupId(),
		Payload:    req.GetPayload(),
		Recipients: recipients,
	}
	o := &Op{Event: op}
	if err := s.commit.submit(ctx, o); err != nil {
		return nil, err
	}
	if o.Err != nil {
		return nil, o.Err
	}
	return &messagingv1.PublishEventResponse{Duplicate: op.Duplicate, RecipientCount: uint32(op.RecipientCount)}, nil
}
