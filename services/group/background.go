package group

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// Run runs the background loops until ctx ends: the outbox delivery, the card
// follower and the sweeper.
func (s *Server) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){s.deliverLoop, s.followCards, s.sweepLoop} {
		wg.Go(func() { loop(ctx) })
	}
	wg.Wait()
}

// deliverLoop delivers the outbox to the messaging service until ctx ends
// (internal/outbox): at once when a change wrote events, after a failed delivery again
// with a wait that doubles from 100 ms up to Config.OutboxPoll, and otherwise every
// OutboxPoll.
func (s *Server) deliverLoop(ctx context.Context) {
	if s.events == nil {
		return // no messaging service: events wait in the outbox
	}
	s.outbox().Run(ctx)
}

// cardEventPage is how many card events the follower asks for at once.
const cardEventPage = 1000

// followCards follows the card service's feed of card changes and marks every group of
// a member whose card was rotated, published or revoked "rotation required". Its
// cursor is stored in group.db with the marks, so each event is applied once. It runs
// until ctx ends.
func (s *Server) followCards(ctx context.Context) {
	if s.cards == nil {
		s.log.Warn("no card service: card rotations do not mark groups rotation required")
		return
	}
	for ctx.Err() == nil {
		n, err := s.followOnce(ctx)
		if err != nil && ctx.Err() == nil {
			lvl := s.log.Warn
			if c := status.Code(err); c == codes.Unavailable || c == codes.DeadlineExceeded {
				lvl = s.log.Debug
			}
			lvl("follow the card feed; will retry", zap.Error(err))
		}
		if n == cardEventPage {
			continue // more are waiting
		}
		if !sleep(ctx, s.cfg.CardPollInterval) {
			return
		}
	}
}

// followOnce applies one page of card events and returns how many it applied.
func (s *Server) followOnce(ctx context.Context) (int, error) {
	var cursor uint64
	if err := s.store.View(func(tx Tx) error {
		var err error
		cursor, err = tx.CardCursor()
		return err
	}); err != nil {
		return 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.PeerTimeout)
	resp, err := s.cards.ListCardEvents(cctx, &cardv1.ListCardEventsRequest{AfterSequence: cursor, PageSize: cardEventPage})
	cancel()
	if err != nil {
		return 0, err
	}
	evs := resp.GetEvents()
	if len(evs) == 0 {
		if latest := resp.GetLatestSequence(); latest < cursor {
			// card.db was replaced by one with a shorter feed: follow the new one.
			s.log.Warn("the card feed is behind the stored cursor; following it from its end", zap.Uint64("cursor", cursor), zap.Uint64("latest", latest))
			return 0, s.store.Update(func(tx Tx) error { return tx.SetCardCursor(latest) })
		}
		return 0, nil
	}
	active, err := s.publishedActive(ctx, evs)
	if err != nil {
		return 0, err
	}
	err = s.update(func(tx Tx) error {
		// Another follower (a restart) may have moved the cursor meanwhile.
		if cur, err := tx.CardCursor(); err != nil || cur != cursor {
			return err
		}
		for _, ev := range evs {
			if err := s.cardChanged(tx, ev, active); err != nil {
				return err
			}
		}
		return tx.SetCardCursor(evs[len(evs)-1].GetSequence())
	})
	return len(evs), err
}

// activeCardKey names an identity of an app in the map publishedActive returns.
type activeCardKey struct{ app, identity string }

// publishedActive looks up, after the events were read, the active card of every
// identity that evs say published one (nil for an identity with none). A publication
// whose card is no longer active when it is applied is stale: a later event of the
// feed, not applied yet, replaced or revoked that card, and decides for it. Without
// this, a feed read late (a publication applied after the member rotated again and a
// commit already wrapped the key to the newer card) would require a rotation nobody
// needs.
func (s *Server) publishedActive(ctx context.Context, evs []*cardv1.CardEvent) (map[activeCardKey][]byte, error) {
	byApp := map[string][]string{}
	active := map[activeCardKey][]byte{}
	for _, ev := range evs {
		k := activeCardKey{ev.GetAppId(), ev.GetIdentity()}
		if _, ok := active[k]; ok || ev.GetKind() != cardv1.CardEventKind_CARD_EVENT_KIND_PUBLISHED {
			continue
		}
		active[k] = nil
		byApp[k.app] = append(byApp[k.app], k.identity)
	}
	for app, identities := range byApp {
		cards, err := s.activeCards(ctx, app, identities)
		if err != nil {
			return nil, err
		}
		for id, c := range cards {
			active[activeCardKey{app, id}] = c.GetCardId()
		}
	}
	return active, nil
}

// cardChanged marks the groups of the event's identity; active holds the identity's
// active card at the time the event is applied (publishedActive).
func (s *Server) cardChanged(tx Tx, ev *cardv1.CardEvent, active map[activeCardKey][]byte) error {
	var groups []string
	if err := tx.MemberGroups(ev.GetAppId(), ev.GetIdentity(), "", func(g string) (bool, error) {
		groups = append(groups, g)
		return true, nil
	}); err != nil {
		return err
	}
	now := s.now()
	for _, id := range groups {
		g, err := tx.Group(ev.GetAppId(), id)
		if err != nil {
			return err
		}
		g.CardsVersion++ // a commit checked against the old cards is checked again
		needed, err := rotationNeeded(tx, g, ev, active[activeCardKey{ev.GetAppId(), ev.GetIdentity()}])
		if err != nil {
			return err
		}
		newly := needed && markRotation(g, groupv1.RotationReason_ROTATION_REASON_CARD_CHANGED)
		if err := putTouched(tx, g, now); err != nil {
			return err
		}
		if err := s.rotationEvent(tx, g, newly); err != nil {
			return err
		}
	}
	return nil
}

// rotationNeeded says whether a card event about a member of g needs a new epoch. The
// feed may be read late (the follower starts from its cursor; a commit may already
// have used the new card), so it compares the event with the card the current epoch's
// key is wrapped to: a new card that the key is not wrapped to, or a revoked card that
// it is wrapped to. A publication whose card is not the identity's active card any more
// (active) is stale, and left to the later event that replaced or revoked the card. A
// member without a key of the current epoch waits for a rotation already (it joined
// since) or gets one for its new card.
func rotationNeeded(tx Tx, g *storagev1.GroupRecord, ev *cardv1.CardEvent, active []byte) (bool, error) {
	if g.GetEpoch() == 0 || encryptionOff(g) {
		return false, nil // no key yet: the first commit reads the cards of its time
	}
	key, err := tx.EpochKey(g.GetAppId(), g.GetGroupId(), ev.GetIdentity(), g.GetEpoch())
	if err != nil {
		return false, err
	}
	covered := key != nil && bytes.Equal(key.GetWrappedKey().GetRecipientCardId(), ev.GetCardId())
	if ev.GetKind() == cardv1.CardEventKind_CARD_EVENT_KIND_REVOKED {
		return covered, nil
	}
	if !bytes.Equal(active, ev.GetCardId()) {
		return false, nil
	}
	return !covered && !(key == nil && g.GetRotationRequired()), nil
}

// sweepLoop marks groups whose rotation period elapsed, drops expired uploads and old
// expired invitations. It runs until ctx ends.
func (s *Server) sweepLoop(ctx context.Context) {
	for sleep(ctx, s.cfg.SweepInterval) {
		if err := s.sweep(s.now()); err != nil {
			s.log.Error("sweep", zap.Error(err))
		}
	}
}

// sweep does one round of the sweeper's work at now.
func (s *Server) sweep(now time.Time) error {
	var due []DueEntry
	var uploads [][3]string
	var invs []*storagev1.GroupInvitationRecord
	var invApps []string
	if err := s.store.View(func(tx Tx) error {
		var err error
		if due, err = tx.DueGroups(now, 1000); err != nil {
			return err
		}
		if uploads, err = tx.ExpiredUploads(now, 1000); err != nil {
			return err
		}
		invs, invApps, err = tx.StaleInvitations(now.Add(-s.cfg.ExpiredInvitationKeep), 1000)
		return err
	}); err != nil {
		return err
	}
	for _, d := range due {
		if err := s.update(func(tx Tx) error { return s.handleDue(tx, d, now) }); err != nil {
			return err
		}
	}
	if len(uploads) > 0 || len(invs) > 0 {
		return s.update(func(tx Tx) error {
			for _, u := range uploads {
				up, err := tx.Upload(u[0], u[1], u[2])
				if err != nil {
					return err
				}
				if up != nil && !now.Before(up.GetExpiresAt().AsTime()) {
					if err := tx.DeleteUpload(u[0], u[1], u[2]); err != nil {
						return err
					}
				}
			}
			for i, inv := range invs {
				cur, err := tx.Invitation(invApps[i], inv.GetGroupId(), inv.GetInvitee())
				if err != nil {
					return err
				}
				if cur == nil || !cur.GetExpiresAt().AsTime().Equal(inv.GetExpiresAt().AsTime()) {
					continue // accepted, declined or renewed since it was read
				}
				if err := tx.DeleteInvitation(invApps[i], inv.GetGroupId(), inv.GetInvitee()); err != nil {
					return err
				}
				g, err := tx.Group(invApps[i], inv.GetGroupId())
				if errors.Is(err, errs.ErrNotFound) {
					continue // the group is gone; its invitations with it
				}
				if err != nil {
					return err
				}
				g.InvitationCount--
				if err := tx.PutGroup(g); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return nil
}

// handleDue handles an entry of rotation_due: it marks the group if its rotation
// period elapsed, and otherwise files it again under its current due time (the epoch
// moved on since the entry was written).
func (s *Server) handleDue(tx Tx, d DueEntry, now time.Time) error {
	if err := tx.SetRotationDue(d.App, d.Group, d.At, time.Time{}); err != nil {
		return err
	}
	g, err := tx.Group(d.App, d.Group)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if tsTime(g.GetRotationDueAt()).Equal(d.At) {
		g.RotationDueAt = nil // the entry just deleted
	}
	newly := false
	if periodElapsed(g, now) {
		newly = markRotation(g, groupv1.RotationReason_ROTATION_REASON_PERIOD_ELAPSED)
		if err := tx.SetRotationDue(d.App, d.Group, tsTime(g.GetRotationDueAt()), time.Time{}); err != nil {
			return err
		}
		g.RotationDueAt = nil
	} else if err := reschedule(tx, g); err != nil {
		return err
	}
	if err := tx.PutGroup(g); err != nil {
		return err
	}
	return s.rotationEvent(tx, g, newly)
}

// sleep waits d or until ctx ends; false means ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
