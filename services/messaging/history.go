package messaging

import (
	"context"

	"google.golang.org/grpc/codes"

	"github.com/umbra-e2ee/umbra/internal/page"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/errs/errstatus"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// History, ListConversations and the cursors: what a conversation holds, which
// conversations a caller takes part in, and how far each participant has read.

// readGroup checks that the caller may read a group conversation.
func (s *Server) readGroup(ctx context.Context, p *auth.Principal, group string) (*groupv1.CheckMembershipResponse, error) {
	m, err := s.groups.CheckMembership(ctx, &groupv1.CheckMembershipRequest{AppId: p.AppID, GroupId: group, Identity: p.Identity})
	if err != nil {
		return nil, err
	}
	if !m.GetMember() {
		return nil, errs.Permissionf("you are not a member of group %s", group)
	}
	return m, nil
}

// latest returns a conversation's latest sequence; 0 for one without messages.
func (s *Server) latest(app, conv string) (*messagingstoragev1.ConversationRecord, error) {
	rec, err := s.store.Conversation(app, conv)
	if notFound(err) {
		return &messagingstoragev1.ConversationRecord{ConversationId: conv}, nil
	}
	return rec, err
}

// callerConversation returns the caller and the conversation id names for it.
func (s *Server) callerConversation(ctx context.Context, id string) (*auth.Principal, target, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, target{}, err
	}
	t, err := s.resolve(p, id)
	if err != nil {
		return nil, target{}, err
	}
	return p, t, nil
}

// readableConversation is callerConversation for a conversation the caller may read:
// of a group, only a member may.
func (s *Server) readableConversation(ctx context.Context, id string) (*auth.Principal, target, error) {
	p, t, err := s.callerConversation(ctx, id)
	if err != nil {
		return nil, target{}, err
	}
	if t.kind == kindGroup {
		if _, err := s.readGroup(ctx, p, t.id); err != nil {
			return nil, target{}, err
		}
	}
	return p, t, nil
}

// History implements MessagingService.
func (s *Server) History(ctx context.Context, req *messagingv1.HistoryRequest) (*messagingv1.HistoryResponse, error) {
	p, t, err := s.callerConversation(ctx, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	size, err := page.Size(req.GetPageSize(), DefaultHistoryPage, MaxHistoryPage)
	if err != nil {
		return nil, err
	}
	q := MessageQuery{Limit: size, MaxBytes: MaxHistoryBytes}
	if t.kind == kindGroup {
		m, err := s.readGroup(ctx, p, t.id)
		if err != nil {
			return nil, err
		}
		if from := m.GetHistoryVisibleFrom(); from != nil {
			q.NotBefore = from.AsTime()
		}
	}
	conv, err := s.latest(p.AppID, t.id)
	if err != nil {
		return nil, err
	}
	latest := conv.GetLatestSequence()
	if tok := req.GetPageToken(); tok != "" {
		c, err := parseHistoryToken(t.id, tok)
		if err != nil {
			return nil, err
		}
		q.Forward = c.forward
		q.After, q.Before = c.from, c.from
	} else {
		switch {
		case req.AfterSequence != nil && req.BeforeSequence != nil:
			return nil, errs.Invalidf("after_sequence and before_sequence are both set: set one, or neither to page back from the latest message")
		case req.AfterSequence != nil:
			if req.GetAfterSequence() > latest {
				return nil, errs.Invalidf("after_sequence %d is beyond the conversation's latest sequence %d", req.GetAfterSequence(), latest)
			}
			q.Forward, q.After = true, req.GetAfterSequence()
		case req.BeforeSequence != nil:
			if req.GetBeforeSequence() > latest+1 {
				return nil, errs.Invalidf("before_sequence %d is beyond the conversation's latest sequence plus one (%d)", req.GetBeforeSequence(), latest+1)
			}
			q.Before = req.GetBeforeSequence()
		default:
			q.Before = latest + 1
		}
	}
	recs, more, err := s.store.Messages(p.AppID, t.id, q)
	if err != nil {
		return nil, err
	}
	resp := &messagingv1.HistoryResponse{ConversationId: t.id, LatestSequence: latest, Messages: make([]*messagingv1.Message, len(recs))}
	for i, r := range recs {
		resp.Messages[i] = messageView(r)
	}
	if more && len(recs) > 0 {
		resp.NextPageToken = historyToken(t.id, historyCursor{forward: q.Forward, from: recs[len(recs)-1].GetMessage().GetSequence()})
	}
	return resp, nil
}

// ListConversations implements MessagingService.
func (s *Server) ListConversations(ctx context.Context, req *messagingv1.ListConversationsRequest) (*messagingv1.ListConversationsResponse, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	size, err := page.Size(req.GetPageSize(), DefaultConversationPage, MaxConversationPage)
	if err != nil {
		return nil, err
	}
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		if after, err = parseListToken(tok); err != nil {
			return nil, err
		}
	}
	resp := &messagingv1.ListConversationsResponse{}
	for len(resp.Conversations) < size {
		parts, err := s.store.Participations(p.AppID, p.Identity, after, size-len(resp.Conversations))
		if err != nil {
			return nil, err
		}
		if len(parts) == 0 {
			return resp, nil
		}
		for _, part := range parts {
			after = part.GetConversationId()
			c, err := s.conversationView(ctx, p, part)
			if err != nil {
				return nil, err
			}
			if c != nil {
				resp.Conversations = append(resp.Conversations, c)
			}
		}
	}
	if more, err := s.store.Participations(p.AppID, p.Identity, after, 1); err != nil {
		return nil, err
	} else if len(more) > 0 {
		resp.NextPageToken = listToken(after)
	}
	return resp, nil
}

// conversationView describes one of the caller's conversations; nil for a group it no
// longer belongs to.
func (s *Server) conversationView(ctx context.Context, p *auth.Principal, part *messagingstoragev1.ParticipationRecord) (*messagingv1.Conversation, error) {
	id := part.GetConversationId()
	c := &messagingv1.Conversation{ConversationId: id, Cursor: cursorView(p.Identity, part)}
	if part.GetKind() == kindGroup {
		m, err := s.groups.CheckMembership(ctx, &groupv1.CheckMembershipRequest{AppId: p.AppID, GroupId: id, Identity: p.Identity})
		if err != nil {
			if code, _ := errstatus.Code(err); code == codes.NotFound {
				return nil, nil // the group was deleted
			}
			return nil, err
		}
		if !m.GetMember() {
			return nil, nil
		}
		c.Kind, c.GroupId = messagingv1.ConversationKind_CONVERSATION_KIND_GROUP, id
	} else {
		c.Kind, c.Peer = messagingv1.ConversationKind_CONVERSATION_KIND_DIRECT, part.GetPeer()
	}
	conv, err := s.latest(p.AppID, id)
	if err != nil {
		return nil, err
	}
	if latest := conv.GetLatestSequence(); latest > 0 {
		stored, err := s.store.HasMessage(p.AppID, id, latest)
		if err != nil {
			return nil, err
		}
		if stored {
			c.LatestSequence, c.LatestMessageAt = latest, conv.GetLatestMessageAt()
		}
	}
	return c, nil
}

// GetCursors implements MessagingService.
func (s *Server) GetCursors(ctx context.Context, req *messagingv1.GetCursorsRequest) (*messagingv1.GetCursorsResponse, error) {
	p, t, err := s.readableConversation(ctx, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	resp := &messagingv1.GetCursorsResponse{ConversationId: t.id}
	ids := []string{p.Identity}
	if t.kind == kindDirect {
		ids = append(ids, t.peer)
	}
	for _, id := range ids {
		c, err := s.cursor(p.AppID, id, t.id)
		if err != nil {
			return nil, err
		}
		resp.Cursors = append(resp.Cursors, c)
	}
	return resp, nil
}

func (s *Server) cursor(app, identity, conv string) (*messagingv1.ConversationCursor, error) {
	part, err := s.store.Participation(app, identity, conv)
	if notFound(err) {
		return &messagingv1.ConversationCursor{Identity: identity}, nil
	}
	if err != nil {
		return nil, err
	}
	return cursorView(identity, part), nil
}

// UpdateCursors implements MessagingService.
func (s *Server) UpdateCursors(ctx context.Context, req *messagingv1.UpdateCursorsRequest) (*messagingv1.UpdateCursorsResponse, error) {
	p, t, err := s.readableConversation(ctx, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	resp := &messagingv1.UpdateCursorsResponse{ConversationId: t.id}
	if req.GetDeliveredSequence() == 0 && req.GetReadSequence() == 0 {
		resp.Cursor, err = s.cursor(p.AppID, p.Identity, t.id)
		return resp, err
	}
	op := &CursorOp{
		AppID:          p.AppID,
		Identity:       p.Identity,
		ConversationID: t.id,
		Kind:           t.kind,
		Peer:           t.peer,
		Delivered:      req.GetDeliveredSequence(),
		Read:           req.GetReadSequence(),
	}
	o := &Op{Cursors: op}
	if err := s.commit.submit(ctx, o); err != nil {
		return nil, err
	}
	if o.Err != nil {
		return nil, o.Err
	}
	resp.Cursor = cursorView(p.Identity, op.Cursor)
	return resp, nil
}

func cursorView(identity string, p *messagingstoragev1.ParticipationRecord) *messagingv1.ConversationCursor {
	return &messagingv1.ConversationCursor{
		Identity:          identity,
		DeliveredSequence: p.GetDeliveredSequence(),
		ReadSequence:      p.GetReadSequence(),
		UpdatedAt:         p.GetCursorUpdatedAt(),
	}
}
