package messaging

import (
	"context"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/messaging/internal/msgstore"
)

// Send implements MessagingService.
func (s *Server) Send(ctx context.Context, req *messagingv1.SendRequest) (*messagingv1.SendResponse, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	ps, err := s.startSend(ctx, p, req, nil)
	if err != nil {
		return nil, err
	}
	return ps.result(ctx, s.commit)
}

// pendingSend is a send on its way: answered already (resp, for a retry of a stored
// group message), or queued on the committer (r).
type pendingSend struct {
	resp *messagingv1.SendResponse
	r    *request
	conv string
}

// result waits for the send to be durable and returns its reply.
func (ps *pendingSend) result(ctx context.Context, c *committer) (*messagingv1.SendResponse, error) {
	if ps.resp != nil {
		return ps.resp, nil
	}
	if err := c.wait(ctx, ps.r); err != nil {
		return nil, err
	}
	if err := ps.r.op.Err; err != nil {
		return nil, err
	}
	op := ps.r.op.Send
	return &messagingv1.SendResponse{
		ConversationId: ps.conv,
		Sequence:       op.Sequence,
		ServerTime:     timestamppb.New(op.ServerTime),
		Duplicate:      op.Duplicate,
	}, nil
}

// startSend checks a Send request from p and queues it on the committer, without
// waiting for it to commit; on a SendStream, after the stream's request queued before
// it (after, nil for none: see request.after).
func (s *Server) startSend(ctx context.Context, p *auth.Principal, req *messagingv1.SendRequest, after *request) (*pendingSend, error) {
	// Limit before any work, so refused and malformed calls count too.
	if ok, retry := s.sends.Allow(key2(p.AppID, p.Identity)); !ok {
		return nil, errs.Exhaustedf("Send rate limit exceeded: at most %s per identity; retry in %s", s.sends, retry.Round(time.Millisecond))
	}
	h := req.GetHeader()
	if err := validKey("client_message_id", req.GetClientMessageId(), MaxClientMessageIDLen); err != nil {
		return nil, err
	}
	if err := validHeader(h); err != nil {
		return nil, err
	}
	switch n := len(req.GetEnvelope()); {
	case n == 0:
		return nil, errs.Invalidf("envelope is empty: send the message's bytes")
	case n > s.cfg.MaxEnvelopeBytes:
		return nil, errs.TooLargef("envelope is %d bytes; this server's limit is %d", n, s.cfg.MaxEnvelopeBytes)
	}
	t, err := s.resolve(p, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	op := &SendOp{
		AppID:           p.AppID,
		Sender:          p.Identity,
		ConversationID:  t.id,
		Kind:            t.kind,
		ClientMessageID: req.GetClientMessageId(),
		MessageKind:     storedKinds[h.GetKind()],
		Epoch:           h.GetEpoch(),
		SenderCardID:    h.GetSenderCardId(),
		Envelope:        req.GetEnvelope(),
	}
	if t.kind == kindDirect {
		switch {
		case h.GetEpoch() != 0:
			return nil, errs.Invalidf("header.epoch is %d: a direct message carries no epoch (0)", h.GetEpoch())
		case h.GetKind() == messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT:
			// Groups have their own encryption mode, which the group service applies.
			if err := s.checkPlaintextDirect(p.AppID); err != nil {
				return nil, err
			}
		}
	}
	if h.GetKind() == messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED {
		// Before the group service sees it: a card that is not the sender's must not
		// make the group rotate (AuthorizeSend marks a group whose member's card
		// changed).
		if err := s.checkSenderCard(ctx, p, h.GetSenderCardId()); err != nil {
			return nil, err
		}
	}
	if t.kind == kindDirect {
		op.Recipients = t.participants
	} else if resp, err := s.prepareGroupSend(ctx, op); err != nil {
		return nil, err
	} else if resp != nil {
		return &pendingSend{resp: resp}, nil
	}
	r, err := s.commit.enqueueAfter(ctx, &Op{Send: op}, after)
	if err != nil {
		return nil, err
	}
	return &pendingSend{r: r, conv: t.id}, nil
}

var groupKinds = map[messagingstoragev1.StoredMessageKind]groupv1.MessageKind{
	messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_ENCRYPTED: groupv1.MessageKind_MESSAGE_KIND_ENCRYPTED,
	messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_PLAINTEXT: groupv1.MessageKind_MESSAGE_KIND_PLAINTEXT,
}

// prepareGroupSend asks the group service whether op may be stored and fills in its
// recipients. A retry of a message stored already is answered from the store (the
// response), without asking again: the epoch may have moved on since, and a retry
// must not be refused for it.
func (s *Server) prepareGroupSend(ctx context.Context, op *SendOp) (*messagingv1.SendResponse, error) {
	rec, err := s.store.Sent(op.AppID, op.Sender, op.ClientMessageID)
	switch {
	case err == nil:
		prev := rec.GetMessage()
		if err := msgstore.CheckRetry(prev, op); err != nil {
			return nil, err
		}
		return &messagingv1.SendResponse{ConversationId: op.ConversationID, Sequence: prev.GetSequence(), ServerTime: prev.GetServerTime(), Duplicate: true}, nil
	case !notFound(err):
		return nil, err
	}
	auth, err := s.groups.AuthorizeSend(ctx, &groupv1.AuthorizeSendRequest{
		AppId:        op.AppID,
		GroupId:      op.ConversationID,
		Sender:       op.Sender,
		Kind:         groupKinds[op.MessageKind],
		Epoch:        op.Epoch,
		SenderCardId: op.SenderCardID,
	})
	if err != nil {
		return nil, err
	}
	members, version, err := s.members(ctx, op.AppID, op.ConversationID, auth.GetMembershipVersion())
	if err != nil {
		return nil, err
	}
	if _, found := slices.BinarySearch(members, op.Sender); !found {
		// Authorised a moment ago: its other devices get the message too.
		members = append(slices.Clone(members), op.Sender)
		slices.Sort(members)
	}
	op.Recipients, op.MembershipVersion = members, version
	return nil, nil
}
