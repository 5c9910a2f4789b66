package sdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
)

// Key transparency (docs/key-transparency.md, "Clients"): every card lookup goes
// through SearchCardsWithProofs, and each answer is verified against a checkpoint
// signed by a log key this client trusts and consistent with the last checkpoint it
// kept (in the key transparency state file, beside the keystore). Its errors
// (errors.go) wrap pkg/kt's kinds (kt.ErrBadProof, kt.ErrMalformed, kt.ErrBadSignature,
// kt.ErrInconsistent, kt.ErrUnknownLogKey), which errors.Is also finds.

// DefaultKeyTransparencyWait is how long a lookup waits, by default, for a checkpoint
// that holds a card published after the latest one: a few times the card service's
// default checkpoint interval (1 s).
const DefaultKeyTransparencyWait = 5 * time.Second

// checkpointPoll is how often a lookup that waits for a newer checkpoint asks for one.
const checkpointPoll = 100 * time.Millisecond

// LogInconsistentError is a checkpoint inconsistent with the one this client kept.
// Kept and Served are both signed by the log key: together they prove that the log
// showed two histories, evidence to give to the operator's auditors or witnesses.
type LogInconsistentError struct {
	Kept, Served []byte
	Err          error
}

func (e *LogInconsistentError) Error() string {
	return fmt.Sprintf("%v: %v", ErrLogInconsistent, e.Err)
}

// Unwrap returns ErrLogInconsistent and pkg/kt's error.
func (e *LogInconsistentError) Unwrap() []error { return []error{ErrLogInconsistent, e.Err} }

// Checkpoint is a verified checkpoint of the key transparency log: its body, and the
// signed note it came in.
type Checkpoint struct {
	kt.Checkpoint
	Signed []byte
}

// ProvedCard is one identity's lookup, verified against a checkpoint: the identity's
// map entry, the log entry behind it, and the card it names.
type ProvedCard struct {
	Identity string
	// Card is the card the map names, verified (content, signatures) and with the id
	// the map commits to; nil when the identity has no card at the checkpoint.
	Card *Card
	// Value is the identity's map entry; nil when it has none (no card event ever).
	Value *ktv1.MapValue
	// Leaf is the log entry proved, entry LeafIndex: the publication of Card, or the
	// revocation that left the identity without one; nil when Value is.
	Leaf      *ktv1.LogLeaf
	LeafIndex uint64
	// Proof is the lookup proof as served.
	Proof      *ktv1.LookupProof
	Checkpoint *Checkpoint
}

// ktWait is Config.KeyTransparencyWait or its default.
func (c *Client) ktWait() time.Duration {
	if c.cfg.KeyTransparencyWait > 0 {
		return c.cfg.KeyTransparencyWait
	}
	return DefaultKeyTransparencyWait
}

// checkLogKeys checks configured log keys: each a signed-note verifier key.
func checkLogKeys(keys []string) error {
	for _, k := range keys {
		if _, err := note.NewVerifier(k); err != nil {
			return fmt.Errorf("sdk: Config.LogKeys: %q is not a signed-note verifier key (<origin>+<hash>+<key>, as umbra card log-key prints it): %v", k, err)
		}
	}
	return nil
}

// trustedLogKeys returns the log keys this client trusts: the configured ones and the
// pinned ones; with neither, it pins the key the card service names (trust on first
// use, like the service keys).
func (c *Client) trustedLogKeys(ctx context.Context) ([]string, error) {
	st, err := c.readKT()
	if err != nil {
		return nil, err
	}
	keys := slices.Clone(c.cfg.LogKeys)
	for _, k := range st.LogKeys {
		if !slices.Contains(keys, k.VerifierKey) {
			keys = append(keys, k.VerifierKey)
		}
	}
	if len(keys) > 0 {
		return keys, nil
	}
	resp, err := c.cards.GetLogKey(ctx, &cardv1.GetLogKeyRequest{})
	if err != nil {
		return nil, fmt.Errorf("sdk: the card service's key transparency log key: %w", err)
	}
	v, err := note.NewVerifier(resp.GetVerifierKey())
	if err != nil || v.Name() != resp.GetOrigin() {
		return nil, fmt.Errorf("%w: the card service names log key %q (origin %q), which is not a verifier key of that origin", ErrUnknownLogKey, resp.GetVerifierKey(), resp.GetOrigin())
	}
	err = c.updateKT(func(s *ktState) (bool, error) {
		if len(s.LogKeys) == 0 {
			s.LogKeys = append(s.LogKeys, pinnedLogKey{VerifierKey: resp.GetVerifierKey(), Source: pinFirstUse, PinnedAt: c.cfg.Now()})
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	st, err = c.readKT()
	if err != nil {
		return nil, err
	}
	for _, k := range st.LogKeys {
		keys = append(keys, k.VerifierKey)
	}
	return keys, nil
}

// logKeysNamed are the trusted log keys (keys) whose name is origin: those that may
// have signed a checkpoint openCheckpoint accepted (two during a log key rotation, when
// the client was given the new key beside the old).
func logKeysNamed(keys []string, origin string) ([]string, error) {
	var out []string
	for _, k := range keys {
		if strings.HasPrefix(k, origin+"+") {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no trusted log key is named %q", ErrUnknownLogKey, origin)
	}
	return out, nil
}

// openCheckpoint verifies a signed checkpoint with the trusted log keys (keys): any one
// of them will do (a log key rotation signs with both keys for a while).
func openCheckpoint(keys []string, signed []byte) (*Checkpoint, error) {
	cp, err := kt.OpenCheckpoint(signed, keys...)
	switch {
	case errors.Is(err, kt.ErrUnknownLogKey):
		return nil, fmt.Errorf("%w (this client trusts %s): %w", ErrUnknownLogKey, strings.Join(keys, ", "), err)
	case err != nil:
		return nil, fmt.Errorf("%w: the checkpoint: %w", ErrUnprovedCard, err)
	}
	return &Checkpoint{Checkpoint: *cp, Signed: signed}, nil
}

// acceptCheckpoint verifies a signed checkpoint from the server: its signature by a
// trusted log key, and its consistency with the checkpoint this client kept (one
// GetConsistencyProof when the sizes differ). A newer checkpoint is kept in its place;
// an older one that is consistent is used but not kept (the client never goes back).
//
// With Config.Witnesses, the checkpoint must also be cosigned by the quorum of them
// (checkWitnesses, docs/key-transparency.md "Clients require witnesses"): a server
// showing this client a view the witnesses never cosigned (a split view) is refused,
// and the cosigned checkpoint is what is kept.
func (c *Client) acceptCheckpoint(ctx context.Context, signed []byte) (*Checkpoint, error) {
	keys, err := c.trustedLogKeys(ctx)
	if err != nil {
		return nil, err
	}
	cp, err := openCheckpoint(keys, signed)
	if err != nil {
		return nil, err
	}
	if len(c.cfg.Witnesses) > 0 {
		named, err := logKeysNamed(keys, cp.Origin)
		if err != nil {
			return nil, err
		}
		if signed, err = c.checkWitnesses(ctx, named, signed); err != nil {
			return nil, err
		}
		cp.Signed = signed
	}
	for range 5 {
		st, err := c.readKT()
		if err != nil {
			return nil, err
		}
		kept, err := st.kept()
		if err != nil {
			return nil, err
		}
		if kept != nil {
			if err := c.checkConsistent(ctx, kept, &cp.Checkpoint); err != nil {
				if errors.Is(err, kt.ErrInconsistent) || errors.Is(err, kt.ErrMalformed) {
					return nil, &LogInconsistentError{Kept: []byte(st.Checkpoint), Served: signed, Err: err}
				}
				return nil, err
			}
			if cp.Size <= kept.Size {
				return cp, nil
			}
		}
		// Keep it, unless another client on the same files kept another meanwhile:
		// then check against that one too.
		saved := false
		err = c.updateKT(func(s *ktState) (bool, error) {
			if s.Checkpoint != st.Checkpoint {
				return false, nil
			}
			s.Checkpoint, saved = string(signed), true
			return true, nil
		})
		if err != nil {
			return nil, err
		}
		if saved {
			return cp, nil
		}
	}
	return nil, errors.New("sdk: the kept key transparency checkpoint kept changing under this client (other clients on the same files); try again")
}

// checkConsistent checks that a and b are views of one append-only log, fetching the
// consistency proof from the smaller to the larger.
func (c *Client) checkConsistent(ctx context.Context, a, b *kt.Checkpoint) error {
	older, newer := a, b
	if b.Size < a.Size {
		older, newer = b, a
	}
	var proof [][]byte
	if older.Size > 0 && older.Size < newer.Size && older.Origin == newer.Origin {
		resp, err := c.cards.GetConsistencyProof(ctx, &cardv1.GetConsistencyProofRequest{FromSize: older.Size, ToSize: newer.Size})
		if err != nil {
			// Not yet a proof of a fork (the call may have failed on its way), but
			// nothing is used until the server proves consistency.
			return fmt.Errorf("sdk: the consistency proof from the checkpoint of %d entries to the one of %d: %w", older.Size, newer.Size, err)
		}
		proof = resp.GetProof()
	}
	return kt.VerifyConsistency(older, newer, proof)
}

// appID is the app the user belongs to, which map keys name: kept in the state file
// after the first WhoAmI.
func (c *Client) appID(ctx context.Context) (string, error) {
	c.mu.Lock()
	app := c.app
	c.mu.Unlock()
	if app != "" {
		return app, nil
	}
	st, err := c.readKT()
	if err != nil {
		return "", err
	}
	if app = st.AppID; app == "" {
		who, err := c.identity.WhoAmI(ctx, &identityv1.WhoAmIRequest{})
		if err != nil {
			return "", err
		}
		app = who.GetAppId()
		if err := c.updateKT(func(s *ktState) (bool, error) {
			if s.AppID == "" {
				s.AppID = app
			}
			return true, nil
		}); err != nil {
			return "", err
		}
	}
	c.mu.Lock()
	c.app = app
	c.mu.Unlock()
	return app, nil
}

// unproved is an ErrUnprovedCard about identity.
func unproved(identity string, format string, args ...any) error {
	return fmt.Errorf("%w: %s: "+format, append([]any{ErrUnprovedCard, identity}, args...)...)
}

// proveBatch looks up identities (at most 1,000, each once) with proofs, and
// verifies every answer against the checkpoint they come with (acceptCheckpoint).
func (c *Client) proveBatch(ctx context.Context, identities []string) (*Checkpoint, []*ProvedCard, error) {
	resp, err := c.cards.SearchCardsWithProofs(ctx, &cardv1.SearchCardsWithProofsRequest{Identities: identities})
	if status.Code(err) == codes.Unimplemented {
		return nil, nil, fmt.Errorf("%w: the server does not serve key transparency (SearchCardsWithProofs): %w", ErrUnprovedCard, err)
	}
	if err != nil {
		return nil, nil, err
	}
	cp, err := c.acceptCheckpoint(ctx, resp.GetCheckpoint())
	if err != nil {
		return nil, nil, err
	}
	app, err := c.appID(ctx)
	if err != nil {
		return nil, nil, err
	}
	if len(resp.GetResults()) != len(identities) {
		return nil, nil, fmt.Errorf("%w: %d answers to a lookup of %d identities", ErrUnprovedCard, len(resp.GetResults()), len(identities))
	}
	out := make([]*ProvedCard, len(identities))
	for i, id := range identities {
		r := resp.GetResults()[i]
		if r.GetProof() == nil {
			return nil, nil, unproved(id, "the answer carries no proof")
		}
		lk, err := kt.VerifyLookup(&cp.Checkpoint, app, id, r.GetProof())
		if err != nil {
			return nil, nil, unproved(id, "%w", err)
		}
		p := &ProvedCard{Identity: id, Value: lk.Value, Leaf: lk.Leaf, LeafIndex: r.GetProof().GetLeafIndex(), Proof: r.GetProof(), Checkpoint: cp}
		switch want := lk.CardID(); {
		case len(want) == 0 && r.GetCard() != nil:
			return nil, nil, unproved(id, "a card (%s) served where the map names none", fingerprint(r.GetCard().GetCardId()))
		case len(want) > 0 && r.GetCard() == nil:
			return nil, nil, unproved(id, "the map names card %s, and no card was served", fingerprint(want))
		case len(want) > 0:
			if !bytes.Equal(r.GetCard().GetCardId(), want) {
				return nil, nil, unproved(id, "the card served, %s, is not the one the map names, %s", fingerprint(r.GetCard().GetCardId()), fingerprint(want))
			}
			card, err := c.verify(ctx, r.GetCard())
			if err != nil {
				return nil, nil, err
			}
			if card.Identity != id {
				return nil, nil, unproved(id, "the map's card %s is a card of %s", card.Fingerprint(), card.Identity)
			}
			p.Card = card
		}
		out[i] = p
	}
	return cp, out, nil
}

// provedCards looks identities up with proofs, in batches of 1,000 (one
// SearchCardsWithProofs each), and waits for a newer checkpoint, up to
// Config.KeyTransparencyWait, when an answer is older than the directory (then the
// batch is looked up again, so that its answers share one checkpoint):
// the map's card has been superseded or revoked since the checkpoint, or the map
// names none and the directory has an active card (asked with one SearchCards for
// those only). The user's own current card, while the log has not caught up with it,
// is this device's own (it holds its key) and is taken as it is.
func (c *Client) provedCards(ctx context.Context, identities []string, ownShortcut bool) (map[string]*ProvedCard, error) {
	ids := slices.Clone(identities)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	var me string
	var myID []byte
	if ks, _, id, err := c.current(); err == nil && ownShortcut {
		me, myID = ks.Identity(), id
	}
	out := make(map[string]*ProvedCard, len(ids))
	for len(ids) > 0 {
		batch := ids[:min(len(ids), MaxLookupBatch)]
		ids = ids[len(batch):]
		deadline := time.Now().Add(c.ktWait())
		for {
			// The whole batch each time, so that its answers share one checkpoint.
			cp, results, err := c.proveBatch(ctx, batch)
			if err != nil {
				return nil, err
			}
			var stale, none []string
			for _, p := range results {
				out[p.Identity] = p
				switch {
				case p.Card != nil && p.Card.Status != cardv1.CardStatus_CARD_STATUS_ACTIVE:
					stale = append(stale, p.Identity)
				case p.Card == nil:
					none = append(none, p.Identity)
				}
			}
			if len(none) > 0 {
				resp, err := c.cards.SearchCards(ctx, &cardv1.SearchCardsRequest{Identities: none})
				if err != nil {
					return nil, err
				}
				for _, pc := range resp.GetCards() {
					if slices.Contains(none, pc.GetIdentity()) && !slices.Contains(stale, pc.GetIdentity()) {
						stale = append(stale, pc.GetIdentity())
					}
				}
			}
			if me != "" && slices.Contains(stale, me) {
				own, err := c.ownCard(ctx, myID)
				if err != nil {
					return nil, err
				}
				if own != nil {
					out[me] = &ProvedCard{Identity: me, Card: own, Checkpoint: cp}
					stale = slices.DeleteFunc(stale, func(id string) bool { return id == me })
				}
			}
			if len(stale) == 0 {
				break
			}
			if !time.Now().Before(deadline) {
				return nil, fmt.Errorf("%w: the directory has a newer card of %s than the log's checkpoint of %d entries holds, %s later; the card service may be behind (its checkpoints come every second by default)",
					ErrNotYetInLog, strings.Join(stale, ", "), cp.Size, c.ktWait())
			}
			if err := c.waitForCheckpoint(ctx, cp.Size, deadline); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// MaxLookupBatch is the most identities one SearchCardsWithProofs looks up.
const MaxLookupBatch = 1000

// ownCard returns this device's current card, id myID, if the directory serves it
// as active: the device made its content (the id is its hash) and holds its keys, so
// it needs no proof of it; the log holds it from the next checkpoint, which the
// device's own monitoring checks. Nil when the directory does not serve it as active.
func (c *Client) ownCard(ctx context.Context, myID []byte) (*Card, error) {
	c.mu.Lock()
	cached, ok := c.cardCache[string(myID)]
	c.mu.Unlock()
	if ok && cached.Status == cardv1.CardStatus_CARD_STATUS_ACTIVE {
		return cached, nil
	}
	card, err := c.CardByID(ctx, myID)
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if card.Status != cardv1.CardStatus_CARD_STATUS_ACTIVE {
		return nil, nil
	}
	return card, nil
}

// waitForCheckpoint waits until the service has a checkpoint larger than size, or
// deadline.
func (c *Client) waitForCheckpoint(ctx context.Context, size uint64, deadline time.Time) error {
	t := time.NewTicker(checkpointPoll)
	defer t.Stop()
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		resp, err := c.cards.GetCheckpoint(ctx, &cardv1.GetCheckpointRequest{})
		if err != nil {
			return err
		}
		if resp.GetSize() > size {
			return nil
		}
	}
	return nil
}

// LookupCards looks identities up in the key transparency log and map, as every
// lookup of this client does (FindCards, TrustedCards, with the same wait for a
// checkpoint that holds a card newer than the latest one), and returns each one's
// verified answer with its proof and checkpoint, whether it has a card or not. The
// user's own card is proved here too, never taken from the keystore.
func (c *Client) LookupCards(ctx context.Context, identities ...string) (map[string]*ProvedCard, error) {
	return c.provedCards(ctx, identities, false)
}

// KeptCheckpoint returns the key transparency checkpoint this client kept (the
// largest it verified), or nil before its first lookup.
func (c *Client) KeptCheckpoint() (*Checkpoint, error) {
	st, err := c.readKT()
	if err != nil {
		return nil, err
	}
	cp, err := st.kept()
	if err != nil || cp == nil {
		return nil, err
	}
	return &Checkpoint{Checkpoint: *cp, Signed: []byte(st.Checkpoint)}, nil
}
