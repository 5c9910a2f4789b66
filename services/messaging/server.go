package messaging

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/page"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/errs/errstatus"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	"github.com/umbra-e2ee/umbra/pkg/ratelimit"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/v1"
)

// Defaults of Config.
const (
	DefaultMaxEnvelopeBytes = 256 << 10
	// MaxEnvelopeLimit caps Config.MaxEnvelopeBytes: a message must fit in a gRPC
	// message (4 MiB) with room to spare.
	MaxEnvelopeLimit = 3 << 20
	DefaultRetention = 30 * 24 * time.Hour
	// DefaultSendRate and DefaultSendBurst limit Send per identity: far above what a
	// person types, and still a bound on a client gone wrong.
	DefaultSendRate       = 50
	DefaultSendBurst      = 200
	DefaultMaxStreams     = 16
	DefaultSweepInterval  = time.Minute
	defaultMemberCacheIDs = 1_000_000
	// sweepLimit bounds the work of one sweep transaction (entries plus their
	// recipients).
	sweepLimit = 10000
)

// Config tunes a Server. The zero value is usable.
type Config struct {
	// MaxEnvelopeBytes bounds an envelope; 0 means DefaultMaxEnvelopeBytes, at most
	// MaxEnvelopeLimit.
	MaxEnvelopeBytes int
	// SendRate is how many messages per second one identity may send on average, and
	// SendBurst how many at once; 0 means the defaults.
	SendRate  float64
	SendBurst int
	// Retention is how long messages and events are kept; 0 means DefaultRetention.
	Retention time.Duration
	// MaxStreamsPerIdentity bounds the open Subscribe streams of one identity, and
	// separately its open SendStreams; 0 means DefaultMaxStreams.
	MaxStreamsPerIdentity int
	// SweepInterval is how often expired messages are deleted; 0 means
	// DefaultSweepInterval.
	SweepInterval time.Duration
	// DeliveryCacheBytes bounds the recent items the service keeps in memory so that
	// streams that have caught up take new items without reading them back from the
	// store: all streams together, each item counted once; 0 means
	// DefaultDeliveryCacheBytes, and a negative value keeps none (every stream reads
	// the store).
	DeliveryCacheBytes int64
	// Revocations, when set, is checked by every open stream every RevocationCheck, so
	// that a stream ends once its token is revoked ("log out everywhere"), not only when
	// it expires. Without it a stream lasts until its token expires.
	Revocations auth.RevocationChecker
	// CardRecheck is how long a sender card's status, once looked up, is trusted (a
	// revoked card is refused at most this long after its revocation); 0 means
	// DefaultCardRecheck. CardCacheSize bounds the cards whose owner is remembered; 0
	// means DefaultCardCacheSize.
	CardRecheck   time.Duration
	CardCacheSize int
	// Clock defaults to time.Now.
	Clock func() time.Time
}

// RevocationCheck is how often an open stream asks Config.Revocations about its token.
const RevocationCheck = 2 * time.Second

// Server implements umbra.messaging.v1.MessagingService. Run must be running for
// writes to happen.
type Server struct {
	messagingv1.UnimplementedMessagingServiceServer
	store       Store
	groups      Groups
	cards       senderCards
	memberCache *memberCache
	log         *zap.Logger
	now         func() time.Time
	cfg         Config
	sends       *ratelimit.Limiter
	notify      *notifier
	sendStreams *streamSlots
	commit      *committer

	runOnce sync.Once
	closing chan struct{} // closed when Run's context ends
}

var _ messagingv1.MessagingServiceServer = (*Server)(nil)

// New returns a Server over store. groups reaches the group service; nil refuses every
// group conversation. cards reaches the card service, which says whose card an
// ENCRYPTED message's sender card is; nil refuses every ENCRYPTED message. A nil log
// discards logs.
func New(store Store, groups Groups, cards Cards, cfg Config, log *zap.Logger) (*Server, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if groups == nil {
		groups = noGroups{}
	}
	if cards == nil {
		cards = noCards{}
	}
	if cfg.CardRecheck == 0 {
		cfg.CardRecheck = DefaultCardRecheck
	}
	if cfg.CardCacheSize == 0 {
		cfg.CardCacheSize = DefaultCardCacheSize
	}
	if cfg.MaxEnvelopeBytes == 0 {
		cfg.MaxEnvelopeBytes = DefaultMaxEnvelopeBytes
	}
	if cfg.SendRate == 0 {
		cfg.SendRate = DefaultSendRate
	}
	if cfg.SendBurst == 0 {
		cfg.SendBurst = DefaultSendBurst
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.MaxStreamsPerIdentity == 0 {
		cfg.MaxStreamsPerIdentity = DefaultMaxStreams
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = DefaultSweepInterval
	}
	if cfg.DeliveryCacheBytes == 0 {
		cfg.DeliveryCacheBytes = DefaultDeliveryCacheBytes
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	switch {
	case cfg.MaxEnvelopeBytes < 1 || cfg.MaxEnvelopeBytes > MaxEnvelopeLimit:
		return nil, fmt.Errorf("messaging: envelope limit %d bytes: want 1 to %d", cfg.MaxEnvelopeBytes, MaxEnvelopeLimit)
	case cfg.Retention < 0, cfg.SweepInterval < 0, cfg.MaxStreamsPerIdentity < 0:
		return nil, fmt.Errorf("messaging: retention %s, sweep interval %s, streams %d: want positive values",
			cfg.Retention, cfg.SweepInterval, cfg.MaxStreamsPerIdentity)
	case cfg.CardRecheck < 0, cfg.CardCacheSize < 2:
		return nil, fmt.Errorf("messaging: card recheck %s, card cache size %d: want a positive duration and at least 2 cards",
			cfg.CardRecheck, cfg.CardCacheSize)
	}
	limiter, err := ratelimit.New(ratelimit.Config{Rate: cfg.SendRate, Burst: cfg.SendBurst, Clock: cfg.Clock})
	if err != nil {
		return nil, fmt.Errorf("messaging: send rate limit: %w", err)
	}
	notify := newNotifier(cfg.MaxStreamsPerIdentity, cfg.DeliveryCacheBytes)
	return &Server{
		store:       store,
		groups:      groups,
		cards:       senderCards{Cards: cards, cache: newCardCache(cfg.CardCacheSize)},
		memberCache: newMemberCache(defaultMemberCacheIDs),
		log:         log,
		now:         cfg.Clock,
		cfg:         cfg,
		sends:       limiter,
		notify:      notify,
		sendStreams: newStreamSlots(cfg.MaxStreamsPerIdentity),
		commit:      newCommitter(store, cfg.Clock, cfg.Retention, notify, log),
		closing:     make(chan struct{}),
	}, nil
}

// Register registers the service on g.
func (s *Server) Register(g grpc.ServiceRegistrar) { messagingv1.RegisterMessagingServiceServer(g, s) }

// sendStreamDrainLimit bounds how long Run keeps the committer for SendStreams that
// are draining after ctx ended. They need a moment (a batch or two); only a stream
// whose client reads no replies takes longer, and the gRPC server's own grace period
// ends it anyway.
const sendStreamDrainLimit = 10 * time.Second

// Run runs the committer, which makes every write, and the retention sweeper, until
// ctx ends. Then it ends the open Subscribe streams, lets the open SendStreams drain
// (each takes no more requests, and answers those it took), commits what is queued
// already, and returns. The store may be closed once it has returned.
func (s *Server) Run(ctx context.Context) {
	s.runOnce.Do(func() {
		commitCtx, stopCommit := context.WithCancel(context.Background())
		defer stopCommit()
		var wg sync.WaitGroup
		wg.Go(func() { s.commit.run(commitCtx) })
		wg.Go(func() { s.sweepLoop(ctx) })
		<-ctx.Done()
		close(s.closing)
		select {
		case <-s.sendStreams.drained():
		case <-time.After(sendStreamDrainLimit):
			s.log.Warn("send streams still open after the drain limit; stopping the committer", zap.Duration("limit", sendStreamDrainLimit))
		}
		stopCommit()
		wg.Wait()
	})
}

func (s *Server) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("retention sweep", zap.Error(err))
			}
		}
	}
}

// Sweep deletes every message and event whose retention has ended, in bounded
// transactions, and returns how many it deleted. The sweeper calls it every
// SweepInterval.
func (s *Server) Sweep(ctx context.Context) (int, error) {
	now, total := s.now(), 0
	for {
		n, more, err := s.commit.sweep(ctx, now, sweepLimit)
		total += n
		if err != nil || !more {
			if total > 0 {
				s.log.Info("retention sweep", zap.Int("deleted", total), zap.Error(err))
			}
			return total, err
		}
	}
}

// Send implements MessagingService.
func (s *Server) Send(ctx context.Context, req *messagingv1.SendRequest) (*messagingv1.SendResponse, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	ps, err := s.startSend(ctx, p, req)
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
// waiting for it to commit.
func (s *Server) startSend(ctx context.Context, p *auth.Principal, req *messagingv1.SendRequest) (*pendingSend, error) {
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
	r, err := s.commit.enqueue(ctx, &Op{Send: op})
	if err != nil {
		return nil, err
	}
	return &pendingSend{r: r, conv: t.id}, nil
}

var groupKinds = map[storagev1.StoredMessageKind]groupv1.MessageKind{
	storagev1.StoredMessageKind_STORED_MESSAGE_KIND_ENCRYPTED: groupv1.MessageKind_MESSAGE_KIND_ENCRYPTED,
	storagev1.StoredMessageKind_STORED_MESSAGE_KIND_PLAINTEXT: groupv1.MessageKind_MESSAGE_KIND_PLAINTEXT,
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
		if prev.GetConversationId() != op.ConversationID || !sameMessage(prev, op) {
			return nil, errs.Existsf("client_message_id %q was already used for another message (in %s); a retry must repeat the conversation, header and envelope exactly, and a new message needs a new id",
				truncate(op.ClientMessageID), prev.GetConversationId())
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
func (s *Server) latest(app, conv string) (*storagev1.ConversationRecord, error) {
	rec, err := s.store.Conversation(app, conv)
	if notFound(err) {
		return &storagev1.ConversationRecord{ConversationId: conv}, nil
	}
	return rec, err
}

// History implements MessagingService.
func (s *Server) History(ctx context.Context, req *messagingv1.HistoryRequest) (*messagingv1.HistoryResponse, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	t, err := s.resolve(p, req.GetConversationId())
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
func (s *Server) conversationView(ctx context.Context, p *auth.Principal, part *storagev1.ParticipationRecord) (*messagingv1.Conversation, error) {
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
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	t, err := s.resolve(p, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	if t.kind == kindGroup {
		if _, err := s.readGroup(ctx, p, t.id); err != nil {
			return nil, err
		}
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
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	t, err := s.resolve(p, req.GetConversationId())
	if err != nil {
		return nil, err
	}
	if t.kind == kindGroup {
		if _, err := s.readGroup(ctx, p, t.id); err != nil {
			return nil, err
		}
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

var apiKinds = map[storagev1.StoredMessageKind]messagingv1.MessageKind{
	storagev1.StoredMessageKind_STORED_MESSAGE_KIND_ENCRYPTED: messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED,
	storagev1.StoredMessageKind_STORED_MESSAGE_KIND_PLAINTEXT: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT,
}

// messageView is the API's view of a stored message. It shares the record's bytes.
func messageView(r *storagev1.MessagingLogRecord) *messagingv1.Message {
	m := r.GetMessage()
	return &messagingv1.Message{
		ConversationId: m.GetConversationId(),
		Sequence:       m.GetSequence(),
		Sender:         m.GetSender(),
		Header: &messagingv1.MessageHeader{
			Kind:         apiKinds[m.GetKind()],
			Epoch:        m.GetEpoch(),
			SenderCardId: m.GetSenderCardId(),
		},
		ClientMessageId: m.GetClientMessageId(),
		ServerTime:      m.GetServerTime(),
		Envelope:        m.GetEnvelope(),
		ExpiresAt:       r.GetExpiresAt(),
	}
}

func eventView(r *storagev1.MessagingLogRecord) *messagingv1.Event {
	e := r.GetEvent()
	return &messagingv1.Event{
		EventId:   e.GetEventId(),
		Type:      e.GetType(),
		GroupId:   e.GetGroupId(),
		Payload:   e.GetPayload(),
		CreatedAt: e.GetCreatedAt(),
	}
}

func cursorView(identity string, p *storagev1.ParticipationRecord) *messagingv1.ConversationCursor {
	return &messagingv1.ConversationCursor{
		Identity:          identity,
		DeliveredSequence: p.GetDeliveredSequence(),
		ReadSequence:      p.GetReadSequence(),
		UpdatedAt:         p.GetCursorUpdatedAt(),
	}
}
