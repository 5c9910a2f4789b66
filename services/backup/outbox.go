package backup

import (
	"context"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/v1"
)

// Events is the messaging service's internal PublishEvent, which takes the events of
// the outbox into their owners' streams. messagingv1.MessagingServiceClient has it.
type Events interface {
	PublishEvent(ctx context.Context, in *messagingv1.PublishEventRequest, opts ...grpc.CallOption) (*messagingv1.PublishEventResponse, error)
}

const (
	// outboxPage is how many events one pass of the outbox reads.
	outboxPage = 100
	// maxOutboxRetry caps the wait between failed deliveries.
	maxOutboxRetry = time.Minute
	// publishTimeout bounds one PublishEvent call.
	publishTimeout = 10 * time.Second
)

// Run delivers the outbox's events until ctx ends: at once when an erasure writes
// one, and after a failed delivery again with a growing wait. An event is deleted once
// the messaging service has accepted it; PublishEvent is idempotent on the event id,
// so an event delivered but not yet deleted when the process stops is not delivered
// twice.
func (s *Server) Run(ctx context.Context) {
	if s.events == nil {
		if pending, err := s.store.Outbox(1); err == nil && len(pending) > 0 {
			s.log.Warn("no messaging service: backup events stay in the outbox until one is configured")
		}
		return
	}
	wait := s.outboxRetry
	for {
		if err := s.deliver(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("backup events not delivered; retrying", zap.Duration("retry_in", wait), zap.Error(err))
		} else {
			wait = s.outboxRetry
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-s.wake:
			timer.Stop()
		case <-timer.C:
			// A failed pass is retried when the timer fires; a clean one polls
			// anyway, which costs one read transaction.
		}
		if wait < maxOutboxRetry {
			wait = min(2*wait, maxOutboxRetry)
		}
	}
}

// deliver sends every pending event, oldest first, and stops at the first one the
// messaging service could not take.
func (s *Server) deliver(ctx context.Context) error {
	for {
		pending, err := s.store.Outbox(outboxPage)
		if err != nil || len(pending) == 0 {
			return err
		}
		for _, ev := range pending {
			if err := s.publish(ctx, ev); err != nil {
				return err
			}
			if err := s.store.DeleteOutbox(ev.GetSequence()); err != nil {
				return err
			}
		}
	}
}

// publish hands one event to the messaging service. An event it refuses for good
// (malformed, or its id taken by another event) is logged and dropped, so that it
// does not hold back the events behind it.
func (s *Server) publish(ctx context.Context, ev *storagev1.BackupOutboxRecord) error {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	resp, err := s.events.PublishEvent(ctx, &messagingv1.PublishEventRequest{
		AppId:      ev.GetAppId(),
		EventId:    ev.GetEventId(),
		Type:       ev.GetType(),
		Recipients: []string{ev.GetIdentity()},
		Payload:    ev.GetPayload(),
	})
	switch status.Code(err) {
	case codes.OK:
		s.log.Info("backup event delivered", zap.String("app", ev.GetAppId()), zap.String("identity", ev.GetIdentity()),
			zap.String("event_id", ev.GetEventId()), zap.Bool("duplicate", resp.GetDuplicate()))
		return nil
	case codes.InvalidArgument, codes.AlreadyExists, codes.NotFound:
		s.log.Error("backup event refused by the messaging service; dropped", zap.String("app", ev.GetAppId()),
			zap.String("identity", ev.GetIdentity()), zap.String("event_id", ev.GetEventId()), zap.Error(err))
		return nil
	}
	return errs.Unavailablef("messaging service: %v", err)
}
