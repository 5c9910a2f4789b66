package backup

import (
	"context"
	"time"

	"github.com/umbra-e2ee/umbra/internal/outbox"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	backupstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/backup/v1"
)

// Events is the messaging service's internal PublishEvent, which takes the events of
// the outbox into their owners' streams. messagingv1.MessagingServiceClient has it.
type Events = outbox.Publisher

const (
	// maxOutboxRetry caps the wait between failed deliveries.
	maxOutboxRetry = time.Minute
	// publishTimeout bounds one PublishEvent call.
	publishTimeout = 10 * time.Second
)

// Run delivers the outbox's events until ctx ends (internal/outbox): at once when an
// erasure writes one, and after a failed delivery again with a wait that doubles from
// Config.OutboxRetry up to a minute.
func (s *Server) Run(ctx context.Context) {
	if s.events == nil {
		if pending, err := s.store.Outbox(1); err == nil && len(pending) > 0 {
			s.log.Warn("no messaging service: backup events stay in the outbox until one is configured")
		}
		return
	}
	s.outbox().Run(ctx)
}

func (s *Server) outbox() outbox.Config {
	return outbox.Config{
		Store:     outboxStore{s.store},
		Publisher: s.events,
		Wake:      s.wake,
		Poll:      s.outboxRetry,
		Retry:     s.outboxRetry,
		MaxRetry:  maxOutboxRetry,
		Timeout:   publishTimeout,
		Log:       s.log,
	}
}

// publish hands one event to the messaging service (see outbox.Config.Publish).
func (s *Server) publish(ctx context.Context, ev *backupstoragev1.BackupOutboxRecord) error {
	return s.outbox().Publish(ctx, publishRequest(ev))
}

// publishRequest is the PublishEvent of an outbox record: its one recipient is the
// slot's owner.
func publishRequest(ev *backupstoragev1.BackupOutboxRecord) *messagingv1.PublishEventRequest {
	return &messagingv1.PublishEventRequest{
		AppId:      ev.GetAppId(),
		EventId:    ev.GetEventId(),
		Type:       ev.GetType(),
		Recipients: []string{ev.GetIdentity()},
		Payload:    ev.GetPayload(),
	}
}

// outboxStore is backup.db's outbox as internal/outbox reads it.
type outboxStore struct{ store Store }

func (o outboxStore) Pending(limit int) ([]outbox.Pending, error) {
	recs, err := o.store.Outbox(limit)
	out := make([]outbox.Pending, len(recs))
	for i, r := range recs {
		out[i] = outbox.Pending{Sequence: r.GetSequence(), Event: publishRequest(r)}
	}
	return out, err
}

func (o outboxStore) Delete(sequence uint64) error { return o.store.DeleteOutbox(sequence) }
