// StageEpochKeys: the upload in which a member stages the wrapped keys of its next commit.

package group

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// StageEpochKeys implements GroupService.
func (s *Server) StageEpochKeys(ctx context.Context, req *groupv1.StageEpochKeysRequest) (*groupv1.StageEpochKeysResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	if err := validUploadID(req.GetUploadId()); err != nil {
		return nil, err
	}
	if err := validMemberKeys("keys", req.GetKeys(), 1, MaxKeysPerRequest); err != nil {
		return nil, err
	}
	now := s.now()
	var resp *groupv1.StageEpochKeysResponse
	err = s.update(func(tx Tx) error {
		g, _, err := loadForCommit(tx, p.AppID, req.GetGroupId(), p.Identity, req.GetFromEpoch())
		if err != nil {
			return err
		}
		app, group := p.AppID, g.GetGroupId()
		var up *storagev1.GroupUploadRecord
		if req.GetUploadId() == "" {
			if err := tx.DeleteUpload(app, group, p.Identity); err != nil {
				return err
			}
			id, err := s.randomID()
			if err != nil {
				return err
			}
			up = &storagev1.GroupUploadRecord{UploadId: id, Owner: p.Identity, FromEpoch: req.GetFromEpoch()}
		} else if up, err = openUpload(tx, app, group, p.Identity, req.GetUploadId(), req.GetFromEpoch(), now); err != nil {
			return err
		}
		for _, k := range req.GetKeys() {
			old, err := tx.StagedKey(up.GetUploadId(), k.GetIdentity())
			if err != nil {
				return err
			}
			if old == nil {
				up.StagedCount++
			}
			if err := tx.PutStagedKey(up.GetUploadId(), &storagev1.GroupStagedKeyRecord{Identity: k.GetIdentity(), WrappedKey: k.GetWrappedKey()}); err != nil {
				return err
			}
		}
		if int(up.GetStagedCount()) > s.cfg.MaxMembers {
			return errs.Preconditionf("the upload would hold %d keys; a group has at most %d members", up.GetStagedCount(), s.cfg.MaxMembers)
		}
		up.ExpiresAt = timestamppb.New(now.Add(s.cfg.UploadTTL))
		if err := tx.PutUpload(app, group, up); err != nil {
			return err
		}
		resp = &groupv1.StageEpochKeysResponse{UploadId: up.GetUploadId(), StagedCount: up.GetStagedCount(), ExpiresAt: up.GetExpiresAt()}
		return nil
	})
	return resp, err
}

// openUpload returns the caller's live upload with id for a commit from `from`.
func openUpload(tx Tx, app, group, owner, id string, from uint64, now time.Time) (*storagev1.GroupUploadRecord, error) {
	up, err := tx.Upload(app, group, owner)
	if err != nil {
		return nil, err
	}
	if up == nil || up.GetUploadId() != id || up.GetFromEpoch() != from || !now.Before(up.GetExpiresAt().AsTime()) {
		return nil, errs.NotFoundf("upload %s not found: it expired, was consumed or replaced, or is another member's or another epoch's; start a new one", id)
	}
	return up, nil
}
