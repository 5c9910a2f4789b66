package card

import (
	"context"
	"crypto/ed25519"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/page"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	"github.com/umbra-e2ee/umbra/pkg/ratelimit"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// Server implements umbra.card.v1.CardService.
type Server struct {
	cardv1.UnimplementedCardServiceServer
	store  Store
	log    *zap.Logger
	now    func() time.Time
	skew   time.Duration
	search *ratelimit.Limiter
	rand   io.Reader
	grants GrantVerifier
	// key counter-signs every card; keyRec is its record (id, creation time). keyMu
	// guards both: RotateServiceKey replaces them (servicekey.go).
	keyMu  sync.RWMutex
	key    ed25519.PrivateKey
	keyRec *cardstoragev1.ServiceKeyRecord
	// origin names the key transparency log; its keys, in the store, sign checkpoints
	// (transparency.go, logkey.go). appendMu makes one caller at a time append to the
	// log or change its keys, and interval is how often the background loop appends.
	origin   string
	appendMu sync.Mutex
	interval time.Duration
}

var _ cardv1.CardServiceServer = (*Server)(nil)

// b32 is unpadded lower-case base32, the alphabet of Umbra's ids.
var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// New returns a Server over store, creating the service's counter-signing key if the
// store has none. A nil log discards logs.
func New(store Store, cfg Config, log *zap.Logger) (*Server, error) {
	if log == nil {
		log = zap.NewNop()
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	limiter, err := ratelimit.New(ratelimit.Config{Rate: cfg.SearchRate, Burst: cfg.SearchBurst, Clock: cfg.Clock})
	if err != nil {
		return nil, fmt.Errorf("card: search rate limit: %w", err)
	}
	candidate, err := newServiceKey(cfg.Rand, cfg.Clock())
	if err != nil {
		return nil, err
	}
	rec, err := store.ServiceKey(candidate)
	if err != nil {
		return nil, fmt.Errorf("card: service key: %w", err)
	}
	if len(rec.GetSeed()) != ed25519.SeedSize {
		return nil, fmt.Errorf("card: stored service key %s has a %d-byte seed", rec.GetKeyId(), len(rec.GetSeed()))
	}
	if rec == candidate {
		log.Info("service key created", zap.String("key_id", rec.GetKeyId()))
	}
	origin, err := openLogKey(store, cfg, log)
	if err != nil {
		return nil, err
	}
	return &Server{
		store:    store,
		log:      log,
		now:      cfg.Clock,
		skew:     cfg.ClockSkew,
		search:   limiter,
		rand:     cfg.Rand,
		grants:   cfg.Grants,
		key:      ed25519.NewKeyFromSeed(rec.GetSeed()),
		keyRec:   rec,
		origin:   origin,
		interval: cfg.CheckpointInterval,
	}, nil
}

// Register registers the service on g.
func (s *Server) Register(g grpc.ServiceRegistrar) { cardv1.RegisterCardServiceServer(g, s) }

// PublishCard implements CardService.
func (s *Server) PublishCard(ctx context.Context, req *cardv1.PublishCardRequest) (*cardv1.PublishCardResponse, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validPublish(req); err != nil {
		return nil, err
	}
	card, err := e2ee.ParseCard(req.GetContent(), req.GetSelfSignature())
	if err != nil {
		return nil, refused("card", err)
	}
	if card.Identity != p.Identity {
		return nil, errs.Permissionf("the card is for identity %s, but the access token acts for %s: publish only your own cards", card.Identity, p.Identity)
	}
	now := s.now()
	if ahead := card.CreatedAt.Sub(now); ahead > s.skew {
		return nil, errs.Invalidf("card created_at %s is %s ahead of the server's clock; at most %s of clock skew is allowed: check the device's clock",
			card.CreatedAt.Format(time.RFC3339), ahead.Round(time.Second), s.skew)
	}
	if req.GetEndorsement() != nil && len(card.PreviousCardID) == 0 {
		return nil, errs.Invalidf("endorsement given for a card without previous_card_id: only a rotation is endorsed")
	}
	grant, err := s.resetGrant(ctx, p, card, req.GetResetGrant())
	if err != nil {
		return nil, err
	}
	serviceSignature, serviceKeyID := s.serviceSign(card.ID)
	rec := &cardstoragev1.CardRecord{
		AppId:                p.AppID,
		Identity:             card.Identity,
		CardId:               card.ID,
		Content:              card.Content,
		SelfSignature:        card.SelfSignature,
		EndorsementContent:   req.GetEndorsement().GetContent(),
		EndorsementSignature: req.GetEndorsement().GetSignature(),
		ServiceSignature:     serviceSignature,
		ServiceKeyId:         serviceKeyID,
		Status:               cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_ACTIVE,
		PublishedAt:          timestamppb.New(now),
		PreviousCardId:       card.PreviousCardID,
		SigningPublicKey:     card.SigningKey,
		Suite:                card.Suite,
		KeyReset:             grant != nil,
	}
	stored, written, err := s.store.Publish(rec, grant, publishRule(rec))
	for attempt := 1; errors.Is(err, ErrStaleServiceKey) && attempt < maxKeyAttempts; attempt++ {
		// Another replica rotated the service key: sign with the new one, now.
		if err := s.reloadServiceKey(rec.GetServiceKeyId()); err != nil {
			return nil, err
		}
		rec.PublishedAt = timestamppb.New(s.now())
		rec.ServiceSignature, rec.ServiceKeyId = s.serviceSign(card.ID)
		stored, written, err = s.store.Publish(rec, grant, publishRule(rec))
	}
	if err != nil {
		return nil, err
	}
	if written {
		fields := []zap.Field{zap.String("app", p.AppID), zap.String("identity", p.Identity),
			zap.String("card_id", cardIDString(stored.GetCardId())), zap.String("previous_card_id", cardIDString(card.PreviousCardID)),
			zap.Bool("endorsed", len(rec.GetEndorsementContent()) > 0), zap.Bool("reset", rec.GetKeyReset())}
		if grant != nil {
			fields = append(fields, zap.String("reset_grant_id", grant.ID))
		}
		s.log.Info("card published", fields...)
	}
	return &cardv1.PublishCardResponse{Card: cardView(stored)}, nil
}

// resetGrant verifies the reset grant of a publication of card by p, if it has one,
// and returns what the store records as spent (nil without a grant). A grant must be
// for the caller's app and identity, and comes with a card that starts a new chain.
func (s *Server) resetGrant(ctx context.Context, p *auth.Principal, card *e2ee.Card, raw string) (*ResetGrantUse, error) {
	if raw == "" {
		return nil, nil
	}
	if len(card.PreviousCardID) > 0 {
		return nil, errs.Invalidf("a reset card starts a new chain: publish it without previous_card_id and without endorsement (the service revokes the active card, if any)")
	}
	if s.grants == nil {
		return nil, errs.Preconditionf("this card service has no reset-grant verifier and refuses every reset")
	}
	g, err := s.grants.VerifyResetGrant(ctx, raw)
	if err != nil {
		return nil, err
	}
	if g.AppID != p.AppID || g.Identity != p.Identity {
		return nil, errs.Permissionf("the reset grant is for identity %s of app %s, but the access token acts for %s of app %s: a grant resets only the identity it names",
			g.Identity, g.AppID, p.Identity, p.AppID)
	}
	return &ResetGrantUse{ID: g.ID, ExpiresAt: g.ExpiresAt}, nil
}

// SearchCards implements CardService.
func (s *Server) SearchCards(ctx context.Context, req *cardv1.SearchCardsRequest) (*cardv1.SearchCardsResponse, error) {
	p, ids, err := s.searchRequest(ctx, req.GetIdentities(), "")
	if err != nil {
		return nil, err
	}
	recs, err := s.store.ActiveCards(p.AppID, ids)
	if err != nil {
		return nil, err
	}
	return &cardv1.SearchCardsResponse{Cards: views(recs, activeView)}, nil
}

// searchRequest is the start of SearchCards and of SearchCardsWithProofs, which share
// one rate limit per identity: the caller, counted against the limit, and the
// identities asked for. shares is said in the limit's refusal after the method's name.
func (s *Server) searchRequest(ctx context.Context, identities []string, shares string) (*auth.Principal, []string, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, nil, err
	}
	// Limit before any work, so refused and malformed calls count too.
	if ok, retry := s.search.Allow(p.AppID + "\x00" + p.Identity); !ok {
		return nil, nil, errs.Exhaustedf("SearchCards rate limit exceeded%s: at most %s per identity; retry in %s", shares, s.search, retry.Round(time.Millisecond))
	}
	ids, err := validIdentities("identities", identities, MaxSearchIdentities)
	if err != nil {
		return nil, nil, err
	}
	return p, ids, nil
}

// GetCard implements CardService.
func (s *Server) GetCard(ctx context.Context, req *cardv1.GetCardRequest) (*cardv1.GetCardResponse, error) {
	p, err := cardCaller(ctx, req.GetCardId())
	if err != nil {
		return nil, err
	}
	rec, err := s.store.Card(p.AppID, req.GetCardId())
	if err != nil {
		return nil, err
	}
	return &cardv1.GetCardResponse{Card: cardView(rec)}, nil
}

// cardCaller is the start of the RPCs about one card, GetCard and RevokeCard: the
// caller, once the card id is checked.
func cardCaller(ctx context.Context, cardID []byte) (*auth.Principal, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validCardID("card_id", cardID); err != nil {
		return nil, err
	}
	return p, nil
}

// ListCardHistory implements CardService.
func (s *Server) ListCardHistory(ctx context.Context, req *cardv1.ListCardHistoryRequest) (*cardv1.ListCardHistoryResponse, error) {
	p, err := auth.Caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := ident.ValidUser("identity", req.GetIdentity()); err != nil {
		return nil, err
	}
	size, err := page.Size(req.GetPageSize(), DefaultHistoryPage, MaxHistoryPage)
	if err != nil {
		return nil, err
	}
	before, err := parseHistoryToken(req.GetIdentity(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	recs, more, err := s.store.History(p.AppID, req.GetIdentity(), before, size)
	if err != nil {
		return nil, err
	}
	resp := &cardv1.ListCardHistoryResponse{Cards: views(recs, cardView)}
	if more {
		resp.NextPageToken = historyToken(req.GetIdentity(), recs[len(recs)-1].GetSequence())
	}
	return resp, nil
}

// RevokeCard implements CardService.
func (s *Server) RevokeCard(ctx context.Context, req *cardv1.RevokeCardRequest) (*cardv1.RevokeCardResponse, error) {
	p, err := cardCaller(ctx, req.GetCardId())
	if err != nil {
		return nil, err
	}
	rec, changed, err := s.store.Revoke(p.AppID, p.Identity, req.GetCardId(), s.now())
	if err != nil {
		return nil, err
	}
	if changed {
		s.log.Info("card revoked", zap.String("app", p.AppID), zap.String("identity", p.Identity), zap.String("card_id", cardIDString(rec.GetCardId())))
	}
	return &cardv1.RevokeCardResponse{Card: cardView(rec)}, nil
}

// LookupActiveCards implements CardService.
func (s *Server) LookupActiveCards(_ context.Context, req *cardv1.LookupActiveCardsRequest) (*cardv1.LookupActiveCardsResponse, error) {
	if err := ident.ValidApp("app_id", req.GetAppId()); err != nil {
		return nil, err
	}
	ids, err := validIdentities("identities", req.GetIdentities(), MaxLookupIdentities)
	if err != nil {
		return nil, err
	}
	recs, err := s.store.ActiveCards(req.GetAppId(), ids)
	if err != nil {
		return nil, err
	}
	return &cardv1.LookupActiveCardsResponse{Cards: views(recs, activeRef)}, nil
}

// ListCardEvents implements CardService.
func (s *Server) ListCardEvents(_ context.Context, req *cardv1.ListCardEventsRequest) (*cardv1.ListCardEventsResponse, error) {
	size, err := page.Size(req.GetPageSize(), DefaultEventPage, MaxEventPage)
	if err != nil {
		return nil, err
	}
	evs, latest, err := s.store.Events(req.GetAfterSequence(), size)
	if err != nil {
		return nil, err
	}
	return &cardv1.ListCardEventsResponse{Events: views(evs, eventView), LatestSequence: latest}, nil
}

var statuses = map[cardstoragev1.CardRecordStatus]cardv1.CardStatus{
	cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_ACTIVE:     cardv1.CardStatus_CARD_STATUS_ACTIVE,
	cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_SUPERSEDED: cardv1.CardStatus_CARD_STATUS_SUPERSEDED,
	cardstoragev1.CardRecordStatus_CARD_RECORD_STATUS_REVOKED:    cardv1.CardStatus_CARD_STATUS_REVOKED,
}

var eventKinds = map[cardstoragev1.CardEventRecordKind]cardv1.CardEventKind{
	cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_PUBLISHED: cardv1.CardEventKind_CARD_EVENT_KIND_PUBLISHED,
	cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_REVOKED:   cardv1.CardEventKind_CARD_EVENT_KIND_REVOKED,
}

// views is the API's view of each record of recs, in order.
func views[R, V any](recs []R, view func(R) V) []V {
	out := make([]V, len(recs))
	for i, r := range recs {
		out[i] = view(r)
	}
	return out
}

// activeRef is the API's reference to an active card, for the other services.
func activeRef(r *cardstoragev1.ActiveCardRecord) *cardv1.ActiveCardRef {
	return &cardv1.ActiveCardRef{
		Identity:         r.GetIdentity(),
		CardId:           r.GetCardId(),
		SigningPublicKey: r.GetSigningPublicKey(),
		Suite:            r.GetSuite(),
	}
}

// eventView is the API's view of a card event.
func eventView(e *cardstoragev1.CardEventRecord) *cardv1.CardEvent {
	return &cardv1.CardEvent{
		Sequence:       e.GetSequence(),
		AppId:          e.GetAppId(),
		Identity:       e.GetIdentity(),
		CardId:         e.GetCardId(),
		Kind:           eventKinds[e.GetKind()],
		PreviousCardId: e.GetPreviousCardId(),
		OccurredAt:     e.GetOccurredAt(),
		KeyReset:       e.GetKeyReset(),
	}
}

// publishedCard is what a stored card's record and its active copy both hold of the
// card as published.
type publishedCard interface {
	GetCardId() []byte
	GetIdentity() string
	GetContent() []byte
	GetSelfSignature() []byte
	GetEndorsementContent() []byte
	GetEndorsementSignature() []byte
	GetServiceSignature() []byte
	GetServiceKeyId() string
	GetPublishedAt() *timestamppb.Timestamp
	GetKeyReset() bool
}

// publishedView is the API's view of the card as published, with status. It shares the
// record's byte slices.
func publishedView(r publishedCard, status cardv1.CardStatus) *cardv1.Card {
	c := &cardv1.Card{
		CardId:           r.GetCardId(),
		Identity:         r.GetIdentity(),
		Content:          r.GetContent(),
		SelfSignature:    r.GetSelfSignature(),
		ServiceSignature: r.GetServiceSignature(),
		ServiceKeyId:     r.GetServiceKeyId(),
		Status:           status,
		PublishedAt:      r.GetPublishedAt(),
		KeyReset:         r.GetKeyReset(),
	}
	if len(r.GetEndorsementContent()) > 0 {
		c.Endorsement = &cardv1.CardEndorsement{Content: r.GetEndorsementContent(), Signature: r.GetEndorsementSignature()}
	}
	return c
}

// activeView is the API's view of an active card. It shares the record's byte slices.
func activeView(r *cardstoragev1.ActiveCardRecord) *cardv1.Card {
	return publishedView(r, cardv1.CardStatus_CARD_STATUS_ACTIVE)
}

// cardView is the API's view of a stored card. It shares the record's byte slices.
func cardView(r *cardstoragev1.CardRecord) *cardv1.Card {
	c := publishedView(r, statuses[r.GetStatus()])
	c.SupersededBy = r.GetSupersededBy()
	c.SupersededAt = r.GetSupersededAt()
	c.RevokedAt = r.GetRevokedAt()
	if seq := r.GetSequence(); seq > 0 {
		c.LogIndex = seq - 1 // the log follows the card event feed, entry i being event i+1
	}
	return c
}
