package group

import (
	"context"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/outbox"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// EventType is the messaging Event.type of the group service's events.
const EventType = "umbra.group.v1.GroupEvent"

// maxEventRecipients is PublishEvent's limit; a larger audience is split.
const maxEventRecipients = 10000

// emit writes ev for recipients to the outbox, in the transaction of the change it
// reports. The messaging service gets it from the delivery loop.
func (s *Server) emit(tx Tx, app string, ev *groupv1.GroupEvent, recipients []string) error {
	if len(recipients) == 0 {
		return nil
	}
	if ev.OccurredAt == nil {
		ev.OccurredAt = timestamppb.New(s.now())
	}
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(ev)
	if err != nil {
		return err
	}
	for start := 0; start < len(recipients); start += maxEventRecipients {
		id, err := s.randomID()
		if err != nil {
			return err
		}
		end := min(start+maxEventRecipients, len(recipients))
		if err := tx.AppendOutbox(&storagev1.GroupOutboxRecord{
			AppId:      app,
			EventId:    "group-" + id,
			Type:       EventType,
			GroupId:    ev.GetGroupId(),
			Recipients: recipients[start:end],
			Payload:    payload,
			CreatedAt:  ev.GetOccurredAt(),
		}); err != nil {
			return err
		}
	}
	return nil
}

// memberIDs returns the identities of the group's members.
func memberIDs(tx Tx, g *storagev1.GroupRecord) ([]string, error) {
	var ids []string
	err := tx.Members(g.GetAppId(), g.GetGroupId(), "", func(m *storagev1.GroupMemberRecord) (bool, error) {
		ids = append(ids, m.GetIdentity())
		return true, nil
	})
	return ids, err
}

// managerIDs returns the identities of the group's owner and admins.
func managerIDs(tx Tx, g *storagev1.GroupRecord) ([]string, error) {
	var ids []string
	err := tx.Members(g.GetAppId(), g.GetGroupId(), "", func(m *storagev1.GroupMemberRecord) (bool, error) {
		if isManager(m) {
			ids = append(ids, m.GetIdentity())
		}
		return true, nil
	})
	return ids, err
}

// toMembers emits an event about the group, with its state, to its members.
func (s *Server) toMembers(tx Tx, g *storagev1.GroupRecord, ev *groupv1.GroupEvent) error {
	ids, err := memberIDs(tx, g)
	if err != nil {
		return err
	}
	return s.emit(tx, g.GetAppId(), s.withGroup(g, ev), ids)
}

// toManagers emits an event about the group, with its state, to its owner and admins.
func (s *Server) toManagers(tx Tx, g *storagev1.GroupRecord, ev *groupv1.GroupEvent) error {
	ids, err := managerIDs(tx, g)
	if err != nil {
		return err
	}
	return s.emit(tx, g.GetAppId(), s.withGroup(g, ev), ids)
}

// toOutsider emits an event to one identity that is not a member: without the group's
// state.
func (s *Server) toOutsider(tx Tx, g *storagev1.GroupRecord, ev *groupv1.GroupEvent, identity string) error {
	ev.GroupId, ev.Epoch = g.GetGroupId(), g.GetEpoch()
	return s.emit(tx, g.GetAppId(), ev, []string{identity})
}

func (s *Server) withGroup(g *storagev1.GroupRecord, ev *groupv1.GroupEvent) *groupv1.GroupEvent {
	ev.GroupId = g.GetGroupId()
	if ev.Epoch == 0 {
		ev.Epoch = g.GetEpoch()
	}
	ev.Group = groupView(g, s.now())
	return ev
}

// rotationEvent emits ROTATION_REQUIRED to the members when newly is set.
func (s *Server) rotationEvent(tx Tx, g *storagev1.GroupRecord, newly bool) error {
	if !newly {
		return nil
	}
	_, reasons := rotationState(g, s.now())
	return s.toMembers(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_ROTATION_REQUIRED, RotationReasons: reasons})
}

// deliverOutbox delivers what the outbox holds and reports whether it emptied it.
func (s *Server) deliverOutbox(ctx context.Context) bool {
	if err := s.outbox().Deliver(ctx); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("events not delivered; will retry", zap.Error(err))
		}
		return false
	}
	return true
}

func (s *Server) outbox() outbox.Config {
	return outbox.Config{
		Store:     outboxStore{s.store},
		Publisher: s.events,
		Wake:      s.wake,
		Poll:      s.cfg.OutboxPoll,
		Retry:     100 * time.Millisecond,
		MaxRetry:  s.cfg.OutboxPoll,
		Timeout:   s.cfg.PeerTimeout,
		Log:       s.log,
	}
}

// outboxStore is group.db's outbox as internal/outbox reads it.
type outboxStore struct{ store Store }

func (o outboxStore) Pending(limit int) ([]outbox.Pending, error) {
	var out []outbox.Pending
	recs, err := o.store.ClaimOutbox(limit)
	for _, r := range recs {
		out = append(out, outbox.Pending{Sequence: r.GetSequence(), Event: &messagingv1.PublishEventRequest{
			AppId:      r.GetAppId(),
			EventId:    r.GetEventId(),
			Type:       r.GetType(),
			GroupId:    r.GetGroupId(),
			Recipients: r.GetRecipients(),
			Payload:    r.GetPayload(),
		}})
	}
	return out, err
}

func (o outboxStore) Delete(sequence uint64) error {
	return o.store.Update(func(tx Tx) error { return tx.DeleteOutbox(sequence) })
}
