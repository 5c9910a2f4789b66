package group

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/refusal"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// Limits of membership statements and of GetMembershipChain.
const (
	// StatementSkew is how far a statement's created_at may be from the service's
	// clock: the card service's tolerance for a card's, and the SDK's for a signer
	// card's lifetime.
	StatementSkew = 5 * time.Minute
	// DefaultChainPage and MaxChainPage bound a GetMembershipChain page in statements,
	// maxChainPageBytes in bytes of statements.
	DefaultChainPage  = 500
	MaxChainPage      = 1000
	maxChainPageBytes = 1 << 20
)

// statement is a membership call's signed statement, checked as far as it can be
// before the call's transaction: parsed, and its signature verified against the
// caller's active card. err is its refusal, which the call reports only once the
// caller's role allows the call (docs/groups.md, "Permission before arguments").
type statement struct {
	st  *e2ee.MembershipStatement
	err error
}

// updateAsCaller runs change in a write transaction, with the caller, who must be a user
// of the app of group.
func (s *Server) updateAsCaller(ctx context.Context, group string, change func(tx Tx, p *auth.Principal) error) error {
	p, err := s.groupCaller(ctx, group)
	if err != nil {
		return err
	}
	return s.update(func(tx Tx) error { return change(tx, p) })
}

// viewAsCaller is updateAsCaller for read, in a read transaction.
func (s *Server) viewAsCaller(ctx context.Context, group string, read func(tx Tx, p *auth.Principal) error) error {
	p, err := s.groupCaller(ctx, group)
	if err != nil {
		return err
	}
	return s.store.View(func(tx Tx) error { return read(tx, p) })
}

// updateMembership runs change in a write transaction, for an RPC that changes group's
// membership with a signed statement: with the caller, who must be a user of the
// group's app, the statement read before the transaction (a bad one is change's to
// refuse, with stm.err, in its place among the checks), and the time of the change.
func (s *Server) updateMembership(ctx context.Context, group string, signed *envelopev1.SignedMembershipStatement, change func(tx Tx, p *auth.Principal, stm *statement, now time.Time) error) error {
	p, err := s.groupCaller(ctx, group)
	if err != nil {
		return err
	}
	stm := s.readStatement(ctx, p, group, signed)
	now := s.now()
	return s.update(func(tx Tx) error { return change(tx, p, stm, now) })
}

// readStatement checks signed, the statement of a membership call on group by p.
func (s *Server) readStatement(ctx context.Context, p *auth.Principal, group string, signed *envelopev1.SignedMembershipStatement) *statement {
	st, err := s.parseStatement(ctx, p, group, signed)
	return &statement{st: st, err: err}
}

func (s *Server) parseStatement(ctx context.Context, p *auth.Principal, group string, signed *envelopev1.SignedMembershipStatement) (*e2ee.MembershipStatement, error) {
	switch {
	case signed == nil || len(signed.GetContent()) == 0:
		return nil, errs.Invalidf("statement is missing: sign the change as an umbra.envelope.v1.MembershipStatementContent (docs/wire-format.md §12)")
	case len(signed.GetContent()) > e2ee.MaxMembershipStatementSize:
		return nil, errs.TooLargef("statement.content is %d bytes; at most %d", len(signed.GetContent()), e2ee.MaxMembershipStatementSize)
	case len(signed.GetSignature()) != SignatureSize:
		return nil, errs.Invalidf("statement.signature is %d bytes; an Ed25519 signature is %d", len(signed.GetSignature()), SignatureSize)
	}
	st, err := e2ee.ParseMembershipStatement(signed)
	if err != nil {
		return nil, refusal.E2EE("statement", err)
	}
	now := s.now()
	switch {
	case st.GroupID != group:
		return nil, errs.Invalidf("statement names group %q, not %s", st.GroupID, group)
	case st.Signer != p.Identity:
		return nil, errs.Invalidf("statement is signed by %s, not the caller: each member signs its own changes", st.Signer)
	case st.CreatedAt.Before(now.Add(-StatementSkew)) || st.CreatedAt.After(now.Add(StatementSkew)):
		return nil, errs.Invalidf("statement is dated %s, more than %s from the service's clock (%s): sign it again now", st.CreatedAt.Format(time.RFC3339), StatementSkew, now.UTC().Format(time.RFC3339))
	}
	cards, err := s.activeCards(ctx, p.AppID, []string{p.Identity})
	if err != nil {
		return nil, err
	}
	card := cards[p.Identity]
	if card == nil || !bytes.Equal(card.GetCardId(), st.SignerCardID) {
		return nil, errs.Invalidf("statement.signer_card_id is not the caller's active card: sign with your current card")
	}
	signer := &e2ee.Card{ID: card.GetCardId(), SigningKey: ed25519.PublicKey(card.GetSigningPublicKey()), Suite: card.GetSuite(), Identity: p.Identity}
	if _, err := e2ee.VerifyMembershipStatement(signed, group, signer); err != nil {
		return nil, refusal.E2EE("statement", err)
	}
	return st, nil
}

// accept checks the statement of a change of g (which the caller then makes and
// writes) in the change's transaction: that it states exactly want, follows the
// group's head (ABORTED with MembershipConflict otherwise), and passes the rules
// every client checks (pkg/e2ee); then it appends it to the chain and moves g's head.
// Call it before the change, so that the rules see the membership it follows.
func (s *Server) accept(tx Tx, g *storagev1.GroupRecord, stm *statement, want e2ee.MembershipChange, now time.Time) error {
	if stm.err != nil {
		return stm.err
	}
	st := stm.st
	wantSubjects := slices.Clone(want.Subjects)
	slices.Sort(wantSubjects)
	wantSubjects = slices.Compact(wantSubjects)
	switch {
	case st.Kind != want.Kind:
		return errs.Invalidf("statement is of kind %s; this call makes a %s statement", st.Kind, want.Kind)
	case !slices.Equal(st.Subjects, wantSubjects):
		return errs.Invalidf("statement names %v; the request asks about %v", st.Subjects, wantSubjects)
	case st.Role != want.Role:
		return errs.Invalidf("statement gives role %s; the request asks for %s", st.Role, want.Role)
	case st.Sequence != g.GetMembershipSequence()+1 || !bytes.Equal(st.PreviousHash, g.GetMembershipHash()):
		return membershipConflict(g, st)
	}
	state := &txState{tx: tx, g: g}
	err := e2ee.CheckMembershipChange(state, st)
	switch {
	case state.err != nil:
		return state.err
	case errors.Is(err, e2ee.ErrNotAuthorized):
		return errs.Permissionf("statement refused: %v", err)
	case err != nil:
		return errs.Preconditionf("statement refused: %v", err)
	}
	rec := &storagev1.GroupStatementRecord{
		Sequence:  st.Sequence,
		Statement: &envelopev1.SignedMembershipStatement{Content: st.Content, Signature: st.Signature},
		Hash:      st.Hash,
		StoredAt:  timestamppb.New(now),
	}
	if err := tx.PutStatement(g.GetAppId(), g.GetGroupId(), rec); err != nil {
		return err
	}
	g.MembershipSequence, g.MembershipHash = st.Sequence, st.Hash
	return nil
}

// membershipConflict is the ABORTED answer to a statement that does not follow g's head.
func membershipConflict(g *storagev1.GroupRecord, st *e2ee.MembershipStatement) error {
	return errs.Conflictf("statement %d does not follow the head of group %s's membership chain (statement %d): another change came first, or it was sent before; fetch the chain and sign again", st.Sequence, g.GetGroupId(), g.GetMembershipSequence()).
		WithDetails(&groupv1.MembershipConflict{GroupId: g.GetGroupId(), CurrentSequence: g.GetMembershipSequence(), CurrentHash: g.GetMembershipHash()})
}

// txState is the membership a statement follows, read from the store: the
// e2ee.MembershipState of the rules. Its first read error is kept in err.
type txState struct {
	tx  Tx
	g   *storagev1.GroupRecord
	err error
}

func (t *txState) keep(err error) {
	if t.err == nil {
		t.err = err
	}
}

func (t *txState) Role(identity string) e2ee.MembershipRole {
	if identity == "" {
		return e2ee.RoleNone
	}
	m, err := t.tx.Member(t.g.GetAppId(), t.g.GetGroupId(), identity)
	t.keep(err)
	return e2ee.MembershipRole(role(m))
}

func (t *txState) Banned(identity string) bool {
	b, err := t.tx.Ban(t.g.GetAppId(), t.g.GetGroupId(), identity)
	t.keep(err)
	return b != nil
}

func (t *txState) Invitation(identity string) ([]byte, time.Time, bool) {
	inv, err := t.tx.Invitation(t.g.GetAppId(), t.g.GetGroupId(), identity)
	t.keep(err)
	if inv == nil {
		return nil, time.Time{}, false
	}
	return inv.GetStatementHash(), inv.GetExpiresAt().AsTime(), true
}

func (t *txState) MemberCount() int { return int(t.g.GetMemberCount()) }

// GetMembershipChain implements GroupService.
func (s *Server) GetMembershipChain(ctx context.Context, req *groupv1.GetMembershipChainRequest) (*groupv1.GetMembershipChainResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	size, after, err := readUintPage(req, DefaultChainPage, MaxChainPage, req.GetAfterSequence())
	if err != nil {
		return nil, err
	}
	resp := &groupv1.GetMembershipChainResponse{}
	err = s.store.View(func(tx Tx) error {
		g, err := tx.Group(p.AppID, req.GetGroupId())
		if err != nil {
			return err
		}
		if me, err := tx.Member(p.AppID, g.GetGroupId(), p.Identity); err != nil {
			return err
		} else if me == nil {
			inv, err := tx.Invitation(p.AppID, g.GetGroupId(), p.Identity)
			if err != nil {
				return err
			}
			if inv == nil || !s.now().Before(inv.GetExpiresAt().AsTime()) {
				return errs.Permissionf("%s is not a member of group %s and has no pending invitation to it", p.Identity, g.GetGroupId())
			}
		}
		resp.HeadSequence, resp.HeadHash = g.GetMembershipSequence(), g.GetMembershipHash()
		bytesIn := 0
		return tx.Statements(p.AppID, g.GetGroupId(), after, func(r *storagev1.GroupStatementRecord) (bool, error) {
			n := len(r.GetStatement().GetContent()) + len(r.GetStatement().GetSignature())
			if len(resp.Statements) == size || len(resp.Statements) > 0 && bytesIn+n > maxChainPageBytes {
				resp.NextPageToken = pageToken(strconv.FormatUint(r.GetSequence()-1, 10))
				return false, nil
			}
			bytesIn += n
			resp.Statements = append(resp.Statements, r.GetStatement())
			return true, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}
