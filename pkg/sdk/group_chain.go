package sdk

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// membershipAttempts bounds how often a membership change is signed again after the
// service answered that another change came first (MembershipConflict).
const membershipAttempts = 4

// chainState is the verified membership chain of one group, kept per Client. Its lock
// serialises the fetch-and-verify of new statements, so that two calls never apply the
// same statement twice.
type chainState struct {
	mu sync.Mutex
	m  *e2ee.Membership
}

// chain returns the group's chain state, made on first use.
func (g *Group) chain() *chainState {
	var cs *chainState
	g.c.groups.update(g.ID, func(s *groupState) {
		if s.chain == nil {
			s.chain = &chainState{m: e2ee.NewMembership(g.ID)}
		}
		cs = s.chain
	})
	return cs
}

// Membership returns the group's membership as the chain of signed statements yields
// it, verified by this client from the group's creation: what the SDK wraps epoch keys
// to, unlike Info's member list, which is the service's word. It fetches and verifies
// only the statements after those it verified before. The result is the client's own
// copy.
func (g *Group) Membership(ctx context.Context) (*e2ee.Membership, error) {
	var out *e2ee.Membership
	err := g.withChain(ctx, 0, nil, true, func(m *e2ee.Membership) error {
		out = m.Clone()
		return nil
	})
	return out, err
}

// withChain calls f with the group's verified membership under the chain's lock, once
// it holds statement sequence: with sync, or when it has fewer statements, or when
// hash (if given) is not the hash of its statement sequence, it first fetches and
// verifies the statements after its head.
func (g *Group) withChain(ctx context.Context, sequence uint64, hash []byte, sync bool, f func(*e2ee.Membership) error) error {
	cs := g.chain()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	m := cs.m
	if sync || m.Sequence() < sequence || hash != nil && !bytes.Equal(m.HashAt(sequence), hash) {
		if err := g.syncChain(ctx, cs); err != nil {
			return err
		}
	}
	return f(m)
}

// membershipAt returns a copy of the group's verified membership at its head, which
// includes statement sequence with hash (fetched and verified first if need be). The
// head may be later than sequence; the caller compares.
func (g *Group) membershipAt(ctx context.Context, sequence uint64, hash []byte) (*e2ee.Membership, error) {
	var out *e2ee.Membership
	err := g.withChain(ctx, sequence, hash, false, func(m *e2ee.Membership) error {
		out = m.Clone()
		return nil
	})
	return out, err
}

// syncChain fetches the statements after cs's head and applies them, each verified
// (verifyStatements); cs.mu is held.
func (g *Group) syncChain(ctx context.Context, cs *chainState) error {
	m := cs.m
	req := &groupv1.GetMembershipChainRequest{GroupId: g.ID, AfterSequence: m.Sequence()}
	for {
		resp, err := g.c.groupClient().GetMembershipChain(ctx, req)
		if status.Code(err) == codes.PermissionDenied {
			return fmt.Errorf("%w: %w", e2ee.ErrNotMember, err)
		}
		if err != nil {
			return err
		}
		if resp.GetHeadSequence() < m.Sequence() || resp.GetHeadSequence() == m.Sequence() && !bytes.Equal(resp.GetHeadHash(), m.Head()) {
			return fmt.Errorf("%w: %w: the service's head is statement %d (%x); this client verified statement %d (%x)",
				ErrMembershipChain, e2ee.ErrBrokenChain, resp.GetHeadSequence(), resp.GetHeadHash(), m.Sequence(), m.Head())
		}
		if err := g.verifyStatements(ctx, m, resp.GetStatements()); err != nil {
			return err
		}
		if resp.GetNextPageToken() == "" {
			if m.Sequence() != resp.GetHeadSequence() || !bytes.Equal(m.Head(), resp.GetHeadHash()) {
				return fmt.Errorf("%w: %w: the service says the head is statement %d (%x) but served the chain up to statement %d (%x)",
					ErrMembershipChain, e2ee.ErrBrokenChain, resp.GetHeadSequence(), resp.GetHeadHash(), m.Sequence(), m.Head())
			}
			return nil
		}
		req = &groupv1.GetMembershipChainRequest{GroupId: g.ID, PageToken: resp.GetNextPageToken()}
	}
}

// verifyStatements applies signed to m in order, each checked as docs/wire-format.md
// §12.3 says: its shape, its signature by the card it names, which must be a card of
// its signer and active when it was made, its link to m's head, and the role rules.
// The first that fails stops it, with ErrMembershipChain.
func (g *Group) verifyStatements(ctx context.Context, m *e2ee.Membership, signed []*e2ee.SignedMembershipStatement) error {
	parsed := make([]*e2ee.MembershipStatement, len(signed))
	var signers []string
	for i, s := range signed {
		st, err := e2ee.ParseMembershipStatement(s)
		if err != nil {
			return fmt.Errorf("%w: the statement after %d: %w", ErrMembershipChain, m.Sequence()+uint64(i), err)
		}
		parsed[i] = st
		if st.Signer != "" && !slices.Contains(signers, st.Signer) {
			signers = append(signers, st.Signer)
		}
	}
	cards, err := g.c.statementCards(ctx, signers)
	if err != nil {
		return err
	}
	for i, st := range parsed {
		var card *Card
		if st.Kind != e2ee.KindServiceRemove {
			if card, err = cards.get(ctx, g.c, st.SignerCardID); err != nil {
				return fmt.Errorf("sdk: the signer card of membership statement %d: %w", st.Sequence, err)
			}
			if err := g.c.checkCardLifetime(card, st.CreatedAt); err != nil {
				return fmt.Errorf("%w: statement %d: %w", ErrMembershipChain, st.Sequence, err)
			}
		}
		var signer *e2ee.Card
		if card != nil {
			signer = card.Card
		}
		if _, err := e2ee.VerifyMembershipStatement(signed[i], g.ID, signer); err != nil {
			return fmt.Errorf("%w: statement %d: %w", ErrMembershipChain, st.Sequence, err)
		}
		if err := m.Apply(st); err != nil {
			return fmt.Errorf("%w: %w", ErrMembershipChain, err)
		}
	}
	return nil
}

// statementCards returns the signer cards of a batch of statements, starting with the
// active cards of signers, fetched at once and checked against this client's pins
// (TrustedCards): most statements are signed with their signer's current card, and a
// card the service substituted for a signer's must not make its statements verify.
// Other cards are fetched by id as they come, with the sender check (signerCards.get).
// The user's own active card is taken only if the keystore holds its key.
func (c *Client) statementCards(ctx context.Context, signers []string) (signerCards, error) {
	out := signerCards{}
	if len(signers) == 0 {
		return out, nil
	}
	found, err := c.TrustedCards(ctx, signers...)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	ks := c.ks
	c.mu.Unlock()
	for _, card := range found {
		if ks != nil && card.Identity == ks.Identity() && ks.KeyFor(card.ID) == nil {
			continue
		}
		out[string(card.ID)] = card
	}
	return out, nil
}

// change signs the statement of change after the head of the group's verified chain
// and sends it with send; when another change came first (MembershipConflict), it
// verifies the statements it missed and signs again. prepare, if not nil, adjusts the
// change to the verified membership, or reports that there is nothing to do (done).
func (g *Group) change(ctx context.Context, change e2ee.MembershipChange, prepare func(m *e2ee.Membership, ch *e2ee.MembershipChange) (done bool, err error), send func(*e2ee.SignedMembershipStatement) error) error {
	ks, kp, myCard, err := g.c.current()
	if err != nil {
		return err
	}
	var lastErr error
	for range membershipAttempts {
		var seq uint64
		var head []byte
		ch := change
		if ch.Kind != e2ee.KindCreate {
			m, err := g.Membership(ctx)
			if err != nil {
				return err
			}
			if prepare != nil {
				done, err := prepare(m, &ch)
				if err != nil || done {
					return err
				}
			}
			seq, head = m.Sequence(), m.Head()
		}
		st, err := e2ee.SignMembershipStatement(kp, myCard, ks.Identity(), g.ID, seq+1, head, ch, g.c.cfg.Now())
		if err != nil {
			return err
		}
		err = send(st)
		if statusDetail[*groupv1.MembershipConflict](err) == nil {
			return err
		}
		lastErr = err
	}
	return fmt.Errorf("sdk: the membership of %s kept changing while this change was signed: %w", g.ID, lastErr)
}

// defaultInvitationTTL is the service's default invitation lifetime, which Invite
// states explicitly: the statement's expiry must match the request's.
const defaultInvitationTTL = 7 * 24 * time.Hour
