package sdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/keystore"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// Monitoring (docs/key-transparency.md, "Monitoring"): a user's own device looks its
// identity up in the log, with proofs, and checks that what the map shows is what
// the user did: every contact's client accepts whatever card the log proves, so the
// owner's devices are the ones that can tell a card they never published.

// AlertReason says what monitoring found.
type AlertReason string

// The reasons of an UnexpectedCardError.
const (
	// AlertForeignCard: the map's current card for the user is not one this device
	// holds the key of, nor one endorsed, link by link, from one it holds (another
	// device of the user rotating). Someone published a card for the user.
	AlertForeignCard AlertReason = "a card this device did not publish"
	// AlertRepublished: the card this device saw current before was published again
	// (a new log entry made it active): something replaced it in between.
	AlertRepublished AlertReason = "this device's card published again"
	// AlertForeignRevocation: the user's latest log entry revokes a card this device
	// never published nor saw endorsed: a card was published for the user, then
	// withdrawn.
	AlertForeignRevocation AlertReason = "a revocation of a card this device did not publish"
	// AlertRevokedElsewhere: this device's current card was revoked, not by this
	// device.
	AlertRevokedElsewhere AlertReason = "this device's card revoked elsewhere"
	// AlertHidden: the map does not show this device's latest card, or its
	// revocation, within Config.KeyTransparencyWait, or its entry went back: the map
	// hides a newer event (or the card service is far behind).
	AlertHidden AlertReason = "the map hides this device's latest card event"
)

// UnexpectedCardError is a monitoring alert: the key transparency log shows, for the
// user's identity, a card event this device did not make. errors.Is(err,
// ErrUnexpectedCard) holds.
type UnexpectedCardError struct {
	Identity string
	// CardID is the card the event is about, and LogIndex the log entry that shows
	// it (Kind is that entry's kind, when the client read it).
	CardID   []byte
	LogIndex uint64
	Kind     ktv1.LogEventKind
	Reason   AlertReason
	// Checkpoint is the checkpoint the log showed it at.
	Checkpoint *Checkpoint
}

func (e *UnexpectedCardError) Error() string {
	kind := ""
	if e.Kind != ktv1.LogEventKind_LOG_EVENT_KIND_UNSPECIFIED {
		kind = " (" + e.Kind.String() + ")"
	}
	size := uint64(0)
	if e.Checkpoint != nil {
		size = e.Checkpoint.Size
	}
	return fmt.Sprintf("key transparency alert for %s: %s: card %s, log entry %d%s, in the checkpoint of %d entries",
		e.Identity, e.Reason, fingerprint(e.CardID), e.LogIndex, kind, size)
}

// Unwrap returns ErrUnexpectedCard.
func (e *UnexpectedCardError) Unwrap() error { return ErrUnexpectedCard }

// MonitorReport is what one monitoring check saw.
type MonitorReport struct {
	// Lookup is the user's own lookup, proved.
	Lookup *ProvedCard
	// Alerts are what it found; empty when the log shows only what this user did.
	Alerts []*UnexpectedCardError
}

// Monitor checks the user's own identity in the key transparency log, once: its
// lookup is proved like any other (and its checkpoint checked against the one this
// client kept), then the map's current card must be this device's current card, or a
// card endorsed from one whose key it holds; the card this device saw before must not
// have been published again; the latest log entry, if it is a revocation, must be of
// one of the user's cards, and not of this device's current card unless this device
// revoked it. Each finding is an *UnexpectedCardError, reported to
// Config.OnKeyTransparencyAlert and returned (joined) as the error, with the report.
// A map that does not yet show this device's latest card is waited for, up to
// Config.KeyTransparencyWait, and is then AlertHidden. It needs the user's keys.
func (c *Client) Monitor(ctx context.Context) (*MonitorReport, error) {
	report, err := c.monitor(ctx)
	if err != nil && c.cfg.OnKeyTransparencyAlert != nil && isTransparencyAlert(err) {
		if report != nil && len(report.Alerts) > 0 {
			for _, a := range report.Alerts {
				c.cfg.OnKeyTransparencyAlert(a)
			}
		} else {
			c.cfg.OnKeyTransparencyAlert(err)
		}
	}
	return report, err
}

// isTransparencyAlert reports whether err is something the log showed, rather than a
// failure to reach it.
func isTransparencyAlert(err error) bool {
	for _, kind := range []error{ErrUnexpectedCard, ErrLogInconsistent, ErrUnprovedCard, ErrUnknownLogKey} {
		if errors.Is(err, kind) {
			return true
		}
	}
	return false
}

func (c *Client) monitor(ctx context.Context) (*MonitorReport, error) {
	ks, _, myID, err := c.current()
	if err != nil {
		return nil, err
	}
	me := ks.Identity()
	deadline := time.Now().Add(c.ktWait())
	for {
		cp, results, err := c.proveBatch(ctx, []string{me})
		if err != nil {
			return nil, err
		}
		st, err := c.readKT()
		if err != nil {
			return nil, err
		}
		p := results[0]
		if p.Card != nil && p.Card.Status != cardv1.CardStatus_CARD_STATUS_ACTIVE && time.Now().Before(deadline) {
			// The card has changed since the checkpoint: look at the one that holds
			// the change.
			if err := c.waitForCheckpoint(ctx, cp.Size, deadline); err != nil {
				return nil, err
			}
			continue
		}
		alerts, hidden, err := c.judgeOwn(ctx, ks, myID, p, st)
		if err != nil {
			return nil, err
		}
		if hidden != nil && time.Now().Before(deadline) {
			if err := c.waitForCheckpoint(ctx, cp.Size, deadline); err != nil {
				return nil, err
			}
			continue
		}
		if hidden != nil {
			alerts = append(alerts, hidden)
		}
		own := &ownEntry{CheckpointSize: cp.Size, CheckedAt: c.cfg.Now()}
		if v := p.Value; v != nil {
			own.Present, own.CardID, own.CardLogIndex, own.LatestLogIndex = true, v.GetCardId(), v.GetCardLogIndex(), v.GetLatestLogIndex()
		}
		// Each event is reported once: the next check compares with this one.
		if err := c.updateKT(func(s *ktState) (bool, error) {
			if s.Own != nil && s.Own.CheckpointSize > own.CheckpointSize {
				return false, nil
			}
			s.Own = own
			return true, nil
		}); err != nil {
			return nil, err
		}
		report := &MonitorReport{Lookup: p, Alerts: alerts}
		if len(alerts) == 0 {
			return report, nil
		}
		errs := make([]error, len(alerts))
		for i, a := range alerts {
			errs[i] = a
		}
		return report, errors.Join(errs...)
	}
}

// judgeOwn checks the user's own proved lookup p against what this device knows:
// its keystore (ks, current card myID) and the state (what the last check saw, the
// cards it revoked). hidden is set when the map does not yet show this device's
// latest card event: the caller waits for a newer checkpoint before reporting it.
func (c *Client) judgeOwn(ctx context.Context, ks *keystore.Keystore, myID []byte, p *ProvedCard, st *ktState) (alerts []*UnexpectedCardError, hidden *UnexpectedCardError, err error) {
	me := ks.Identity()
	alert := func(reason AlertReason, card []byte, index uint64, kind ktv1.LogEventKind) *UnexpectedCardError {
		return &UnexpectedCardError{Identity: me, CardID: card, LogIndex: index, Kind: kind, Reason: reason, Checkpoint: p.Checkpoint}
	}
	held := func(id []byte) bool { return ks.KeyFor(id) != nil }
	prev := st.Own
	v := p.Value
	if v == nil {
		if prev != nil && prev.Present {
			// Map entries are never removed.
			return []*UnexpectedCardError{alert(AlertHidden, prev.CardID, prev.LatestLogIndex, 0)}, nil, nil
		}
		// This device's card is not in the log yet (or is kept out of it).
		return nil, alert(AlertHidden, myID, 0, 0), nil
	}
	if prev != nil && prev.Present && v.GetLatestLogIndex() < prev.LatestLogIndex {
		alerts = append(alerts, alert(AlertHidden, prev.CardID, prev.LatestLogIndex, 0))
	}
	newEvent := prev == nil || !prev.Present || prev.LatestLogIndex != v.GetLatestLogIndex()
	if cardID := v.GetCardId(); len(cardID) > 0 {
		switch {
		case held(cardID):
			if !bytes.Equal(cardID, myID) || st.revokedHere(cardID) {
				// An older card of this device, or one it revoked: the map does not
				// show its latest event.
				hidden = alert(AlertHidden, cardID, v.GetCardLogIndex(), p.Leaf.GetKind())
			}
		default:
			ok, err := c.chainsToHeld(ctx, p.Card, held)
			if err != nil {
				return nil, nil, err
			}
			if !ok {
				alerts = append(alerts, alert(AlertForeignCard, cardID, v.GetCardLogIndex(), p.Leaf.GetKind()))
			}
		}
		if prev != nil && bytes.Equal(prev.CardID, cardID) && prev.CardLogIndex != v.GetCardLogIndex() {
			alerts = append(alerts, alert(AlertRepublished, cardID, v.GetCardLogIndex(), p.Leaf.GetKind()))
		}
		if v.GetLatestLogIndex() != v.GetCardLogIndex() && newEvent {
			// The latest event revoked another card of the identity: read it.
			leaf, err := c.provedEntry(ctx, p.Checkpoint, v.GetLatestLogIndex(), me)
			if err != nil {
				return nil, nil, err
			}
			a, err := c.judgeRevocation(ctx, leaf, v.GetLatestLogIndex(), myID, st, held, alert)
			if err != nil {
				return nil, nil, err
			}
			if a != nil {
				alerts = append(alerts, a)
			}
		}
		return alerts, hidden, nil
	}
	// No card: the latest event (p.Leaf) revoked the last one.
	revoked := p.Leaf.GetCardId()
	if newEvent {
		a, err := c.judgeRevocation(ctx, p.Leaf, p.LeafIndex, myID, st, held, alert)
		if err != nil {
			return nil, nil, err
		}
		if a != nil {
			alerts = append(alerts, a)
		}
	}
	if !st.revokedHere(myID) && !bytes.Equal(revoked, myID) {
		// This device's current card should be the map's.
		hidden = alert(AlertHidden, revoked, p.LeafIndex, p.Leaf.GetKind())
	}
	return alerts, hidden, nil
}

// judgeRevocation checks a revocation of the user's (leaf, entry index): of a card of
// the user's (held here or endorsed from one held here), and of this device's current
// card only if this device revoked it.
func (c *Client) judgeRevocation(ctx context.Context, leaf *ktv1.LogLeaf, index uint64, myID []byte, st *ktState, held func([]byte) bool,
	alert func(AlertReason, []byte, uint64, ktv1.LogEventKind) *UnexpectedCardError) (*UnexpectedCardError, error) {
	revoked := leaf.GetCardId()
	if bytes.Equal(revoked, myID) && !st.revokedHere(myID) {
		return alert(AlertRevokedElsewhere, revoked, index, leaf.GetKind()), nil
	}
	if held(revoked) {
		return nil, nil
	}
	card, err := c.CardByID(ctx, revoked)
	if status.Code(err) == codes.NotFound {
		return alert(AlertForeignRevocation, revoked, index, leaf.GetKind()), nil
	}
	if err != nil {
		return nil, err
	}
	ok, err := c.chainsToHeld(ctx, card, held)
	if err != nil || ok {
		return nil, err
	}
	return alert(AlertForeignRevocation, revoked, index, leaf.GetKind()), nil
}

// chainsToHeld reports whether card is endorsed, link by link, from a card whose key
// the keystore holds: a rotation by another device of the user.
func (c *Client) chainsToHeld(ctx context.Context, card *Card, held func([]byte) bool) (bool, error) {
	cur := card
	for range maxChainLinks {
		if held(cur.ID) {
			return true, nil
		}
		if len(cur.PreviousCardID) == 0 || cur.Endorsement == nil {
			return false, nil
		}
		prev, err := c.CardByID(ctx, cur.PreviousCardID)
		if status.Code(err) == codes.NotFound {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if prev.Identity != card.Identity || e2ee.VerifyEndorsement(prev.Card, cur.Card, cur.Endorsement.Content, cur.Endorsement.Signature) != nil {
			return false, nil
		}
		cur = prev
	}
	return false, nil
}

// provedEntry fetches log entry index with its inclusion proof in cp's log, checks
// it, and checks that it is an entry of identity's.
func (c *Client) provedEntry(ctx context.Context, cp *Checkpoint, index uint64, identity string) (*ktv1.LogLeaf, error) {
	resp, err := c.cards.GetInclusionProof(ctx, &cardv1.GetInclusionProofRequest{Index: index, TreeSize: cp.Size})
	if err != nil {
		return nil, err
	}
	if err := kt.VerifyInclusion(&cp.Checkpoint, index, resp.GetLeaf(), resp.GetProof()); err != nil {
		return nil, unproved(identity, "log entry %d: %w", index, err)
	}
	leaf, err := kt.ParseLeaf(resp.GetLeaf())
	if err != nil {
		return nil, unproved(identity, "log entry %d: %w", index, err)
	}
	app, err := c.appID(ctx)
	if err != nil {
		return nil, err
	}
	key := kt.MapKey(app, identity)
	if !bytes.Equal(leaf.GetMapKey(), key[:]) {
		return nil, unproved(identity, "log entry %d, which the map names as its latest, is about another map key", index)
	}
	if leaf.GetKind() != ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION {
		return nil, unproved(identity, "log entry %d, which the map names as its latest after its card's, is a %s, not a revocation", index, leaf.GetKind())
	}
	return leaf, nil
}

// startMonitor runs Monitor now and then every interval until Close; what it finds
// goes to Config.OnKeyTransparencyAlert (Monitor reports it). A device without keys
// yet is checked once it has them.
func (c *Client) startMonitor(interval time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	c.stopMonitor, c.monitorDone = cancel, make(chan struct{})
	go func() {
		defer close(c.monitorDone)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if c.HasPrivateKey() {
				c.Monitor(ctx) // errors other than alerts are retried at the next tick
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}
