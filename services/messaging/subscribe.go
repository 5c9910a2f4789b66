package messaging

import (
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// A stream reads its inbox from the store in pages of at most this many items and
// bytes, from its own cursor, until it has caught up.
const (
	subscribePage  = 256
	subscribeBytes = 4 << 20
)

// Subscribe implements MessagingService.
//
// A stream keeps no queue: it reads from the store from its cursor until it has sent
// every stored item, then waits for the notifier to say that the inbox grew, and takes
// the new items from the notifier's memory while it has them. A stream
// whose client reads slowly only falls behind in the store; the committer never waits
// for it.
func (s *Server) Subscribe(req *messagingv1.SubscribeRequest, stream grpc.ServerStreamingServer[messagingv1.SubscribeResponse]) error {
	ctx := stream.Context()
	p, err := auth.Caller(ctx)
	if err != nil {
		return err
	}
	interval, err := heartbeatInterval(req.GetHeartbeatInterval())
	if err != nil {
		return err
	}
	if err := validSubscribeStart(req); err != nil {
		return err
	}
	w, err := s.notify.open(p.AppID, p.Identity)
	if err != nil {
		return err
	}
	defer s.notify.close(p.AppID, p.Identity)
	// Registered first, read second: a commit after the read wakes the stream.
	latest, err := s.store.InboxHead(p.AppID, p.Identity)
	if err != nil {
		return err
	}
	cursor := latest
	if req.GetFromStart() {
		cursor = 0
	}
	if req.AfterInboxSequence != nil {
		if after := req.GetAfterInboxSequence(); after > latest {
			return errs.Invalidf("after_inbox_sequence %d is beyond your latest inbox sequence %d: resume from at most %d", after, latest, latest)
		}
		cursor = req.GetAfterInboxSequence()
	}
	resume := func() string { return fmt.Sprintf("subscribe again after inbox sequence %d", cursor) }
	expired := func() error { return s.tokenErr(ctx, p, false, resume()) }
	revoked := func() error { return s.tokenErr(ctx, p, true, resume()) }
	var checkRevoked <-chan time.Time
	if s.cfg.Revocations != nil {
		t := time.NewTicker(RevocationCheck)
		defer t.Stop()
		checkRevoked = t.C
	}
	var expiry <-chan time.Time
	if !p.ExpiresAt.IsZero() {
		t := time.NewTimer(p.ExpiresAt.Sub(s.now()))
		defer t.Stop()
		expiry = t.C
	}
	beat := time.NewTicker(interval)
	defer beat.Stop()
	heartbeat := func() error {
		return stream.Send(&messagingv1.SubscribeResponse{
			InboxSequence: cursor,
			Item: &messagingv1.SubscribeResponse_Heartbeat{Heartbeat: &messagingv1.Heartbeat{
				ServerTime:          timestamppb.New(s.now()),
				LatestInboxSequence: cursor,
			}},
		})
	}
	caughtUp := false
	for {
		if err := expired(); err != nil {
			return err
		}
		select { // also while the stream is busy catching up
		case <-checkRevoked:
			if err := revoked(); err != nil {
				return err
			}
		default:
		}
		latest, changed := s.notify.state(w)
		// Once caught up, read only when the notifier knows of items past the cursor
		// (a stream often reads an item before the commit's wake-up reaches it).
		if !caughtUp || latest > cursor {
			var items []InboxItem
			var head uint64
			if caughtUp { // new items are usually still in memory
				items = s.notify.since(w, cursor)
			}
			if items == nil {
				if items, head, err = s.store.Inbox(p.AppID, p.Identity, cursor, subscribePage, subscribeBytes); err != nil {
					return err
				}
			}
			for _, it := range items {
				resp := &messagingv1.SubscribeResponse{InboxSequence: it.Sequence}
				if it.Record.GetEvent() != nil {
					resp.Item = &messagingv1.SubscribeResponse_Event{Event: eventView(it.Record)}
				} else {
					resp.Item = &messagingv1.SubscribeResponse_Message{Message: messageView(it.Record)}
				}
				if err := stream.Send(resp); err != nil {
					return err
				}
				cursor = it.Sequence
			}
			if len(items) > 0 {
				beat.Reset(interval)
				continue
			}
			// Caught up. Items between the cursor and the head that were not found have
			// expired under retention.
			cursor = max(cursor, head)
			if !caughtUp {
				caughtUp = true
				if err := heartbeat(); err != nil {
					return err
				}
				beat.Reset(interval)
			}
		}
		select {
		case <-changed:
		case <-beat.C:
			if err := expired(); err != nil {
				return err
			}
			if err := heartbeat(); err != nil {
				return err
			}
		case <-expiry:
		case <-checkRevoked:
			if err := revoked(); err != nil {
				return err
			}
		case <-s.closing:
			return errs.Unavailablef("the messaging service is shutting down: subscribe again after inbox sequence %d", cursor)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
