package backup

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/outbox"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	backupstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/backup/v1"
)

const (
	// maxOutboxRetry caps the wait between failed deliveries.
	maxOutboxRetry = time.Minute
	// publishTimeout bounds one PublishEvent call.
	publishTimeout = 10 * time.Second
)

// eventType is the Event.type of a BackupEvent.
var eventType = string(proto.MessageName(&backupv1.BackupEvent{}))

// erasedEvent is the outbox record that tells rec's owner that its backup, still in
// rec, was erased at now.
func erasedEvent(rec *backupstoragev1.BackupSlotRecord, now time.Time) (*backupstoragev1.BackupOutboxRecord, error) {
	version := rec.GetBackup().GetVersion()
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(&backupv1.BackupEvent{
		Kind:       backupv1.BackupEventKind_BACKUP_EVENT_KIND_ERASED,
		Slot:       backupv1.BackupSlot(rec.GetSlot()),
		Version:    version,
		OccurredAt: timestamppb.New(now),
	})
	if err != nil {
		return nil, fmt.Errorf("backup: encode event: %w", err)
	}
	return &backupstoragev1.BackupOutboxRecord{
		AppId:    rec.GetAppId(),
		Identity: rec.GetIdentity(),
		// A version is erased at most once (versions are never reused), so this id
		// names one event for good and a redelivery is recognised.
		EventId:   fmt.Sprintf("backup-erased/%s/%d/%s", slotName(rec.GetSlot()), version, rec.GetIdentity()),
		Type:      eventType,
		Payload:   payload,
		CreatedAt: timestamppb.New(now),
	}, nil
}

// outbox is how internal/outbox delivers backup.db's outbox to the messaging service.
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
	recs, err := o.store.ClaimOutbox(limit)
	out := make([]outbox.Pending, len(recs))
	for i, r := range recs {
		out[i] = outbox.Pending{Sequence: r.GetSequence(), Event: publishRequest(r)}
	}
	return out, err
}

func (o outboxStore) Delete(sequence uint64) error { return o.store.DeleteOutbox(sequence) }
