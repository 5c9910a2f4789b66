package group

import (
	"context"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// SetEncryptionMode implements GroupService.
func (s *Server) SetEncryptionMode(ctx context.Context, req *groupv1.SetEncryptionModeRequest) (*groupv1.SetEncryptionModeResponse, error) {
	g, err := s.changeSettings(ctx, req.GetGroupId(), validMode("encryption_mode", req.GetEncryptionMode()), "change the encryption mode", func(g *storagev1.GroupRecord) bool {
		was := mode(g)
		if was == req.GetEncryptionMode() {
			return false
		}
		g.EncryptionMode = uint32(req.GetEncryptionMode())
		switch {
		case req.GetEncryptionMode() == groupv1.EncryptionMode_ENCRYPTION_MODE_OFF:
			// No epochs in mode OFF; switching on again marks rotation.
			g.RotationRequired, g.RotationReasons = false, nil
		case was == groupv1.EncryptionMode_ENCRYPTION_MODE_OFF:
			markRotation(g, groupv1.RotationReason_ROTATION_REASON_ENCRYPTION_ENABLED)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return &groupv1.SetEncryptionModeResponse{Group: g}, nil
}

// SetRotationPolicy implements GroupService.
func (s *Server) SetRotationPolicy(ctx context.Context, req *groupv1.SetRotationPolicyRequest) (*groupv1.SetRotationPolicyResponse, error) {
	period, invalid := validRotationPolicy(req.GetRotationPolicy())
	if req.GetRotationPolicy() == nil {
		invalid = errs.Invalidf("rotation_policy is missing")
	}
	limit := req.GetRotationPolicy().GetMaxMessagesPerEpoch()
	g, err := s.changeSettings(ctx, req.GetGroupId(), invalid, "change the rotation policy", func(g *storagev1.GroupRecord) bool {
		if g.GetRotationPeriod().AsDuration() == period && g.GetMaxMessagesPerEpoch() == limit {
			return false
		}
		g.RotationPeriod, g.MaxMessagesPerEpoch = durationOrNil(period), limit
		if limit > 0 && g.GetEpochMessageCount() >= limit {
			markRotation(g, groupv1.RotationReason_ROTATION_REASON_MESSAGE_LIMIT)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	return &groupv1.SetRotationPolicyResponse{Group: g}, nil
}

// SetHistoryVisibility implements GroupService.
func (s *Server) SetHistoryVisibility(ctx context.Context, req *groupv1.SetHistoryVisibilityRequest) (*groupv1.SetHistoryVisibilityResponse, error) {
	g, err := s.changeSettings(ctx, req.GetGroupId(), validVisibility("history_visibility", req.GetHistoryVisibility()), "change the history visibility", func(g *storagev1.GroupRecord) bool {
		if g.GetHistoryVisibility() == uint32(req.GetHistoryVisibility()) {
			return false
		}
		g.HistoryVisibility = uint32(req.GetHistoryVisibility())
		return true
	})
	if err != nil {
		return nil, err
	}
	return &groupv1.SetHistoryVisibilityResponse{Group: g}, nil
}

// changeSettings applies change, an owner-only change of the group's settings that
// reports whether it changed anything, and tells the members. invalid, when not nil,
// is the refusal of a malformed request, returned once the call has been counted
// against the caller's rate limit and the caller is known to be the owner (anyone else
// is refused for that, whatever the request holds).
func (s *Server) changeSettings(ctx context.Context, group string, invalid error, what string, change func(*storagev1.GroupRecord) bool) (*groupv1.Group, error) {
	p, err := s.groupCaller(ctx, group)
	if err != nil {
		return nil, err
	}
	now := s.now()
	var view *groupv1.Group
	err = s.update(func(tx Tx) error {
		g, me, err := loadAsOwner(tx, p.AppID, group, p.Identity, what)
		if err != nil {
			return err
		}
		if invalid != nil {
			return invalid
		}
		reasons := len(g.GetRotationReasons())
		if change(g) {
			newly := len(g.GetRotationReasons()) > reasons
			touch(g, now)
			if err := reschedule(tx, g); err != nil {
				return err
			}
			if err := tx.PutGroup(g); err != nil {
				return err
			}
			if err := s.toMembers(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_SETTINGS_CHANGED, Actor: p.Identity}); err != nil {
				return err
			}
			if err := s.rotationEvent(tx, g, newly); err != nil {
				return err
			}
		}
		view = viewFor(g, now, me)
		return nil
	})
	return view, err
}
