package group

import (
	"bytes"
	"context"
	"strconv"
	"time"

	"github.com/umbra-e2ee/umbra/internal/page"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// CheckMembership implements GroupService.
func (s *Server) CheckMembership(_ context.Context, req *groupv1.CheckMembershipRequest) (*groupv1.CheckMembershipResponse, error) {
	if err := validAppGroup(req.GetAppId(), req.GetGroupId()); err != nil {
		return nil, err
	}
	if err := ident.ValidUser("identity", req.GetIdentity()); err != nil {
		return nil, err
	}
	var resp *groupv1.CheckMembershipResponse
	err := s.store.View(func(tx Tx) error {
		g, err := tx.Group(req.GetAppId(), req.GetGroupId())
		if err != nil {
			return err
		}
		m, err := tx.Member(req.GetAppId(), req.GetGroupId(), req.GetIdentity())
		if err != nil {
			return err
		}
		resp = &groupv1.CheckMembershipResponse{
			EncryptionMode:    mode(g),
			Epoch:             g.GetEpoch(),
			RotationRequired:  rotationRequired(g, s.now()),
			MembershipVersion: g.GetMembershipVersion(),
		}
		if m != nil {
			resp.Member, resp.Role, resp.JoinedAt = true, role(m), m.GetJoinedAt()
			if groupv1.HistoryVisibility(g.GetHistoryVisibility()) == groupv1.HistoryVisibility_HISTORY_VISIBILITY_SINCE_JOIN {
				resp.HistoryVisibleFrom = m.GetJoinedAt()
			}
		}
		return nil
	})
	return resp, err
}

// ListMemberIdentities implements GroupService.
func (s *Server) ListMemberIdentities(_ context.Context, req *groupv1.ListMemberIdentitiesRequest) (*groupv1.ListMemberIdentitiesResponse, error) {
	if err := validAppGroup(req.GetAppId(), req.GetGroupId()); err != nil {
		return nil, err
	}
	size, tok, err := readPage(req, DefaultMemberPage, MaxMemberPage, 2)
	if err != nil {
		return nil, err
	}
	var version uint64
	after := ""
	if tok != nil {
		if version, err = strconv.ParseUint(tok[0], 10, 64); err != nil || ident.ValidUser("page_token", tok[1]) != nil {
			return nil, page.ErrMalformedToken
		}
		after = tok[1]
	}
	resp := &groupv1.ListMemberIdentitiesResponse{}
	err = s.store.View(func(tx Tx) error {
		g, err := tx.Group(req.GetAppId(), req.GetGroupId())
		if err != nil {
			return err
		}
		resp.MembershipVersion = g.GetMembershipVersion()
		if tok != nil && version != g.GetMembershipVersion() {
			return errs.Conflictf("the membership of group %s changed since the previous page (version %d, now %d): list it again from the start", g.GetGroupId(), version, g.GetMembershipVersion())
		}
		return tx.Members(req.GetAppId(), g.GetGroupId(), after, func(m *storagev1.GroupMemberRecord) (bool, error) {
			if len(resp.Identities) == size {
				resp.NextPageToken = pageToken(strconv.FormatUint(g.GetMembershipVersion(), 10), resp.Identities[size-1])
				return false, nil
			}
			resp.Identities = append(resp.Identities, m.GetIdentity())
			return true, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// sendDecision is AuthorizeSend's verdict on a message, before anything is written.
type sendDecision struct {
	resp *groupv1.AuthorizeSendResponse
	// refusal is the error to answer with; nil to accept.
	refusal error
	// mark is a rotation reason to record (with the refusal or the acceptance); count
	// says the message is counted toward the epoch's limit.
	mark  groupv1.RotationReason
	count bool
	group *storagev1.GroupRecord
}

// AuthorizeSend implements GroupService.
func (s *Server) AuthorizeSend(_ context.Context, req *groupv1.AuthorizeSendRequest) (*groupv1.AuthorizeSendResponse, error) {
	if err := validAppGroup(req.GetAppId(), req.GetGroupId()); err != nil {
		return nil, err
	}
	if err := ident.ValidUser("sender", req.GetSender()); err != nil {
		return nil, err
	}
	switch req.GetKind() {
	case groupv1.MessageKind_MESSAGE_KIND_ENCRYPTED:
		if len(req.GetSenderCardId()) != CardIDSize {
			return nil, errs.Invalidf("sender_card_id is %d bytes; an ENCRYPTED message names the sender's 32-byte card id", len(req.GetSenderCardId()))
		}
	case groupv1.MessageKind_MESSAGE_KIND_PLAINTEXT:
		if req.GetEpoch() != 0 || len(req.GetSenderCardId()) != 0 {
			return nil, errs.Invalidf("a PLAINTEXT message carries no epoch and no sender card id")
		}
	default:
		return nil, errs.Invalidf("kind %s is not ENCRYPTED or PLAINTEXT", req.GetKind())
	}
	// Most messages need a write (the count), but refusals without a mark do not: read
	// first, and write only when there is something to write.
	now := s.now()
	var d *sendDecision
	if err := s.store.View(func(tx Tx) error {
		var err error
		d, err = decideSend(tx, req, now)
		return err
	}); err != nil {
		return nil, err
	}
	if d.mark == 0 && !d.count {
		return d.answer()
	}
	err := s.write(s.store.Batch, func(tx Tx) error {
		var err error
		if d, err = decideSend(tx, req, now); err != nil {
			return err
		}
		if d.mark == 0 && !d.count {
			return nil
		}
		g := d.group
		if d.count {
			g.EpochMessageCount++
			if limit := g.GetMaxMessagesPerEpoch(); limit > 0 && g.GetEpochMessageCount() >= limit {
				d.mark = groupv1.RotationReason_ROTATION_REASON_MESSAGE_LIMIT
			}
		}
		newly := false
		if d.mark != 0 {
			newly = markRotation(g, d.mark)
			if d.mark == groupv1.RotationReason_ROTATION_REASON_PERIOD_ELAPSED {
				if err := tx.SetRotationDue(g.GetAppId(), g.GetGroupId(), tsTime(g.GetRotationDueAt()), time.Time{}); err != nil {
					return err
				}
				g.RotationDueAt = nil
			}
			if d.refusal != nil {
				d.refusal = epochRequired(g, req, now)
			}
		}
		if err := tx.PutGroup(g); err != nil {
			return err
		}
		return s.rotationEvent(tx, g, newly)
	})
	if err != nil {
		return nil, err
	}
	return d.answer()
}

func (d *sendDecision) answer() (*groupv1.AuthorizeSendResponse, error) {
	if d.refusal != nil {
		return nil, d.refusal
	}
	return d.resp, nil
}

// decideSend judges a message against the group's state in tx.
func decideSend(tx Tx, req *groupv1.AuthorizeSendRequest, now time.Time) (*sendDecision, error) {
	g, err := tx.Group(req.GetAppId(), req.GetGroupId())
	if err != nil {
		return nil, err
	}
	m, err := tx.Member(req.GetAppId(), req.GetGroupId(), req.GetSender())
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errs.Permissionf("%s is not a member of group %s", req.GetSender(), req.GetGroupId())
	}
	d := &sendDecision{group: g, resp: &groupv1.AuthorizeSendResponse{Epoch: g.GetEpoch(), MembershipVersion: g.GetMembershipVersion(), EncryptionMode: mode(g)}}
	switch mode(g) {
	case groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED:
		if req.GetKind() == groupv1.MessageKind_MESSAGE_KIND_PLAINTEXT {
			return nil, errs.Preconditionf("group %s requires encryption: PLAINTEXT messages are refused", req.GetGroupId())
		}
	case groupv1.EncryptionMode_ENCRYPTION_MODE_OFF:
		if req.GetKind() == groupv1.MessageKind_MESSAGE_KIND_ENCRYPTED {
			return nil, errs.Preconditionf("group %s has encryption OFF: only PLAINTEXT messages are accepted", req.GetGroupId())
		}
	}
	if req.GetKind() == groupv1.MessageKind_MESSAGE_KIND_PLAINTEXT {
		return d, nil
	}
	switch {
	case req.GetEpoch() != g.GetEpoch() || rotationRequired(g, now) || g.GetEpoch() == 0:
		// Epoch 0 has no key: a message "at epoch 0" waits for the first commit.
		if periodElapsed(g, now) && !g.GetRotationRequired() {
			d.mark = groupv1.RotationReason_ROTATION_REASON_PERIOD_ELAPSED // recorded with the refusal
		}
		d.refusal = epochRequired(g, req, now)
		return d, nil
	}
	key, err := tx.EpochKey(req.GetAppId(), req.GetGroupId(), req.GetSender(), g.GetEpoch())
	if err != nil {
		return nil, err
	}
	if key == nil || !bytes.Equal(key.GetWrappedKey().GetRecipientCardId(), req.GetSenderCardId()) {
		// The sender's card is not the one the epoch's key was wrapped to: it rotated.
		d.mark = groupv1.RotationReason_ROTATION_REASON_CARD_CHANGED
		d.refusal = epochRequired(g, req, now)
		return d, nil
	}
	d.count = true
	return d, nil
}

// epochRequired is the refusal of an ENCRYPTED message at an epoch it may not use.
func epochRequired(g *storagev1.GroupRecord, req *groupv1.AuthorizeSendRequest, now time.Time) error {
	required, reasons := rotationState(g, now)
	return errs.Preconditionf("epoch required: group %s is at epoch %d (rotation required: %t) and the message is at epoch %d",
		g.GetGroupId(), g.GetEpoch(), required, req.GetEpoch()).
		WithDetails(&groupv1.EpochRequired{GroupId: g.GetGroupId(), CurrentEpoch: g.GetEpoch(), MessageEpoch: req.GetEpoch(), RotationRequired: required, RotationReasons: reasons})
}
