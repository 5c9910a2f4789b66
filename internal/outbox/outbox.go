// Package outbox delivers a service's outbox of events to the messaging service.
//
// A service that reports a change to users (the group service's membership events, the
// backup service's erasures) writes the event to an outbox in its own store, in the
// transaction of the change, so that no event is lost to a crash or an unreachable
// peer. Run takes the events from there into the users' streams through the messaging
// service's internal PublishEvent, oldest first, and deletes each once it was
// accepted. PublishEvent is idempotent on the event id, so an event delivered but not
// yet deleted when the process stops is not delivered twice.
package outbox

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// Publisher is the messaging service's internal PublishEvent;
// messagingv1.MessagingServiceClient has it.
type Publisher interface {
	PublishEvent(ctx context.Context, in *messagingv1.PublishEventRequest, opts ...grpc.CallOption) (*messagingv1.PublishEventResponse, error)
}

// Pending is one event waiting in an outbox.
type Pending struct {
	// Sequence is the event's key in the outbox.
	Sequence uint64
	Event    *messagingv1.PublishEventRequest
}

// Store is a service's outbox.
type Store interface {
	// Pending returns up to limit events, oldest first.
	Pending(limit int) ([]Pending, error)
	// Delete removes a delivered event; a missing one is no error.
	Delete(sequence uint64) error
}

// page is how many events one read of the outbox takes.
const page = 100

// Config says where an outbox is and how to deliver it.
type Config struct {
	Store     Store
	Publisher Publisher
	// Wake tells Run that an event was written, to deliver it at once.
	Wake <-chan struct{}
	// Poll is the wait after a pass that emptied the outbox; Retry the first wait
	// after a failed pass, which doubles after each failure up to MaxRetry.
	Poll, Retry, MaxRetry time.Duration
	// Timeout bounds one PublishEvent call.
	Timeout time.Duration
	Log     *zap.Logger
}

// Run delivers the outbox until ctx ends: at once when woken, after a failed pass
// again with a growing wait, and otherwise every Poll.
func (c Config) Run(ctx context.Context) {
	retry := c.Retry
	for {
		wait := c.Poll
		if err := c.Deliver(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.Log.Warn("events not delivered; retrying", zap.Duration("retry_in", retry), zap.Error(err))
			wait, retry = retry, min(2*retry, c.MaxRetry)
		} else {
			retry = c.Retry
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-c.Wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// Deliver sends every pending event, oldest first, and stops at the first one the
// messaging service could not take.
func (c Config) Deliver(ctx context.Context) error {
	for {
		pending, err := c.Store.Pending(page)
		if err != nil {
			return fmt.Errorf("read the outbox: %w", err)
		}
		if len(pending) == 0 {
			return nil
		}
		for _, p := range pending {
			if err := c.Publish(ctx, p.Event); err != nil {
				return err
			}
			if err := c.Store.Delete(p.Sequence); err != nil {
				return fmt.Errorf("delete a delivered event: %w", err)
			}
		}
	}
}

// Publish hands one event to the messaging service. An event it refuses for good
// (malformed, or its id taken by another event) is logged and dropped, so that it does
// not hold back the events behind it: nil then too.
func (c Config) Publish(ctx context.Context, ev *messagingv1.PublishEventRequest) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	resp, err := c.Publisher.PublishEvent(ctx, ev)
	switch status.Code(err) {
	case codes.OK:
		c.Log.Debug("event delivered", zap.String("app", ev.GetAppId()), zap.String("event_id", ev.GetEventId()), zap.Bool("duplicate", resp.GetDuplicate()))
		return nil
	case codes.InvalidArgument, codes.AlreadyExists, codes.NotFound:
		c.Log.Error("the messaging service refused an event; dropped", zap.String("app", ev.GetAppId()), zap.String("event_id", ev.GetEventId()), zap.Error(err))
		return nil
	}
	return errs.Unavailablef("messaging service: %v", err)
}
