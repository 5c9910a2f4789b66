package messaging

import (
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/pkg/ratelimit"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// Server implements umbra.messaging.v1.MessagingService. Run must be running for
// writes to happen.
type Server struct {
	messagingv1.UnimplementedMessagingServiceServer
	store       Store
	cards       senderCards
	groups      Groups
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

// New returns a Server over store. cards reaches the card service, which says whose
// card an ENCRYPTED message's sender card is; nil refuses every ENCRYPTED message.
// groups reaches the group service; nil refuses every group conversation. A nil log
// discards logs.
func New(store Store, cards Cards, groups Groups, cfg Config, log *zap.Logger) (*Server, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if cards == nil {
		cards = noCards{}
	}
	if groups == nil {
		groups = noGroups{}
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	limiter, err := ratelimit.New(ratelimit.Config{Rate: cfg.SendRate, Burst: cfg.SendBurst, Clock: cfg.Clock})
	if err != nil {
		return nil, fmt.Errorf("messaging: send rate limit: %w", err)
	}
	notify := newNotifier(cfg.MaxStreamsPerIdentity, cfg.DeliveryCacheBytes)
	return &Server{
		store:       store,
		cards:       senderCards{Cards: cards, cache: newCardCache(cfg.CardCacheSize)},
		groups:      groups,
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

// The API's views of stored records, which History and Subscribe send.

var apiKinds = map[messagingstoragev1.StoredMessageKind]messagingv1.MessageKind{
	messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_ENCRYPTED: messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED,
	messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_PLAINTEXT: messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT,
}

// messageView is the API's view of a stored message. It shares the record's bytes.
func messageView(r *messagingstoragev1.MessagingLogRecord) *messagingv1.Message {
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

func eventView(r *messagingstoragev1.MessagingLogRecord) *messagingv1.Event {
	e := r.GetEvent()
	return &messagingv1.Event{
		EventId:   e.GetEventId(),
		Type:      e.GetType(),
		GroupId:   e.GetGroupId(),
		Payload:   e.GetPayload(),
		CreatedAt: e.GetCreatedAt(),
	}
}

// key2 joins two ids, which hold no zero byte, into one map key.
func key2(a, b string) string { return a + "\x00" + b }
