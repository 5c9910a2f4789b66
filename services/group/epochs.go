package group

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"slices"
	"strconv"

	"go.uber.org/zap"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/refusal"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// maxMismatchList bounds each list of a CommitMismatch.
const maxMismatchList = 100

// maxLookupIdentities is how many identities one LookupActiveCards call may name (the
// card service's MaxLookupIdentities).
const maxLookupIdentities = 10000

// epochConflict is the ABORTED answer to a stale from_epoch.
func epochConflict(g *storagev1.GroupRecord, from uint64) error {
	return errs.Conflictf("group %s is at epoch %d, not %d: another commit won; load the current epoch (and compare current_commit_hash with yours if you are retrying)", g.GetGroupId(), g.GetEpoch(), from).
		WithDetails(&groupv1.EpochConflict{GroupId: g.GetGroupId(), CurrentEpoch: g.GetEpoch(), CurrentCommitHash: g.GetCommitHash(), CommittedBy: g.GetCommittedBy()})
}

// loadForCommit reads the group and the caller's membership for a stage or commit from
// `from`: the caller must be a member (checked first, so that a non-member learns
// nothing of the group), the encryption mode not OFF, and from the current epoch.
func loadForCommit(tx Tx, app, group, identity string, from uint64) (*storagev1.GroupRecord, *storagev1.GroupMemberRecord, error) {
	g, me, err := loadAsMember(tx, app, group, identity)
	if err != nil {
		return nil, nil, err
	}
	if encryptionOff(g) {
		return nil, nil, errs.Preconditionf("group %s has encryption OFF: it has no epochs", group)
	}
	if g.GetEpoch() != from {
		return nil, nil, epochConflict(g, from)
	}
	return g, me, nil
}

// parseCommitContent parses and checks the signed content of a commit from `from`
// (pkg/e2ee holds the wire format); the signature is verified once the signer's card
// is known.
func parseCommitContent(group string, from uint64, c *envelopev1.SignedEpochCommit) (*e2ee.EpochCommit, error) {
	switch {
	case c == nil:
		return nil, errs.Invalidf("commit is missing: send the signed EpochCommitContent")
	case len(c.GetContent()) == 0:
		return nil, errs.Invalidf("commit.content is empty: send the exact bytes of an umbra.envelope.v1.EpochCommitContent")
	case len(c.GetContent()) > MaxCommitContent:
		return nil, errs.TooLargef("commit.content is %d bytes; at most %d", len(c.GetContent()), MaxCommitContent)
	case len(c.GetSignature()) != SignatureSize:
		return nil, errs.Invalidf("commit.signature is %d bytes; an Ed25519 signature is %d", len(c.GetSignature()), SignatureSize)
	}
	content, err := e2ee.ParseEpochCommit(c)
	if err != nil {
		return nil, refusal.E2EE("commit", err)
	}
	switch {
	case content.GroupID != group:
		return nil, errs.Invalidf("commit.content names group %q, not %s", content.GroupID, group)
	case content.Epoch != from+1:
		return nil, errs.Invalidf("commit.content creates epoch %d; a commit from epoch %d creates epoch %d", content.Epoch, from, from+1)
	}
	return content, nil
}

// activeCards asks the card service for the active cards of ids.
func (s *Server) activeCards(ctx context.Context, app string, ids []string) (map[string]*cardv1.ActiveCardRef, error) {
	if s.cards == nil {
		return nil, errs.Unavailablef("this group service has no card service configured, so it cannot check members' cards: commits and shares are refused")
	}
	out := make(map[string]*cardv1.ActiveCardRef, len(ids))
	for start := 0; start < len(ids); start += maxLookupIdentities {
		end := min(start+maxLookupIdentities, len(ids))
		cctx, cancel := context.WithTimeout(ctx, s.cfg.PeerTimeout)
		resp, err := s.cards.LookupActiveCards(cctx, &cardv1.LookupActiveCardsRequest{AppId: app, Identities: ids[start:end]})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, errs.Unavailablef("the card service cannot check the members' cards now (%s): retry", status.Code(err))
		}
		for _, c := range resp.GetCards() {
			out[c.GetIdentity()] = c
		}
	}
	return out, nil
}

// commitInput is what CommitEpoch checks, read in one transaction.
type commitInput struct {
	group             *storagev1.GroupRecord
	members           []string
	keys              map[string]*envelopev1.WrappedEpochKey
	membershipVersion uint64
	cardsVersion      uint64
}

// CommitEpoch implements GroupService.
func (s *Server) CommitEpoch(ctx context.Context, req *groupv1.CommitEpochRequest) (_ *groupv1.CommitEpochResponse, err error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	if err := validUploadID(req.GetUploadId()); err != nil {
		return nil, err
	}
	if req.GetUploadId() != "" {
		// The upload is consumed whatever the outcome; a commit that succeeded deleted it.
		defer func() {
			if err == nil {
				return
			}
			err := s.update(func(tx Tx) error {
				up, err := tx.Upload(p.AppID, req.GetGroupId(), p.Identity)
				if err != nil || up == nil || up.GetUploadId() != req.GetUploadId() {
					return err
				}
				return tx.DeleteUpload(p.AppID, req.GetGroupId(), p.Identity)
			})
			if err != nil {
				s.log.Warn("drop a used upload", zap.Error(err))
			}
		}()
	}
	if err := validMemberKeys("keys", req.GetKeys(), 0, MaxKeysPerRequest); err != nil {
		return nil, err
	}
	var content *e2ee.EpochCommit
	for attempt := 0; ; attempt++ {
		// Membership, mode and epoch first (a stale commit is ABORTED whatever it
		// holds), then the commit itself.
		in, err := s.readCommitInput(p.AppID, p.Identity, req)
		if err != nil {
			return nil, err
		}
		if content == nil {
			if content, err = parseCommitContent(req.GetGroupId(), req.GetFromEpoch(), req.GetCommit()); err != nil {
				return nil, err
			}
		}
		if err := s.checkCommit(ctx, p.AppID, p.Identity, req, content, in); err != nil {
			return nil, err
		}
		resp, retry, err := s.writeCommit(p.AppID, p.Identity, req, in)
		if retry && attempt < 3 {
			continue // the members or their cards changed while the commit was checked
		}
		if retry {
			return nil, errs.Unavailablef("the membership of group %s kept changing while the commit was checked: retry", req.GetGroupId())
		}
		return resp, err
	}
}

func (s *Server) readCommitInput(app, identity string, req *groupv1.CommitEpochRequest) (*commitInput, error) {
	in := &commitInput{keys: map[string]*envelopev1.WrappedEpochKey{}}
	err := s.store.View(func(tx Tx) error {
		g, _, err := loadForCommit(tx, app, req.GetGroupId(), identity, req.GetFromEpoch())
		if err != nil {
			return err
		}
		in.group, in.membershipVersion, in.cardsVersion = g, g.GetMembershipVersion(), g.GetCardsVersion()
		if in.members, err = memberIDs(tx, g); err != nil {
			return err
		}
		if req.GetUploadId() != "" {
			up, err := openUpload(tx, app, g.GetGroupId(), identity, req.GetUploadId(), req.GetFromEpoch(), s.now())
			if err != nil {
				return err
			}
			staged, err := tx.StagedKeys(up.GetUploadId())
			if err != nil {
				return err
			}
			for _, k := range staged {
				in.keys[k.GetIdentity()] = k.GetWrappedKey()
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, k := range req.GetKeys() {
		if _, dup := in.keys[k.GetIdentity()]; dup {
			return nil, errs.Invalidf("keys[%d].identity %s has a key in the upload too: each identity at most once", i, k.GetIdentity())
		}
		in.keys[k.GetIdentity()] = k.GetWrappedKey()
	}
	return in, nil
}

// checkCommit checks the commit against the previous epoch, the caller's card and the
// members' active cards.
func (s *Server) checkCommit(ctx context.Context, app, identity string, req *groupv1.CommitEpochRequest, content *e2ee.EpochCommit, in *commitInput) error {
	if g := in.group; content.Membership.Sequence != g.GetMembershipSequence() || !bytes.Equal(content.Membership.Hash, g.GetMembershipHash()) {
		return errs.Preconditionf("the commit is for membership statement %d; group %s's membership chain is at statement %d: verify the statements since and commit for the members they yield",
			content.Membership.Sequence, g.GetGroupId(), g.GetMembershipSequence()).
			WithDetails(&groupv1.CommitMismatch{MembershipSequence: g.GetMembershipSequence(), MembershipHash: g.GetMembershipHash()})
	}
	if !bytes.Equal(content.PreviousCommitHash, in.group.GetCommitHash()) {
		return errs.Invalidf("commit.content previous_commit_hash does not name epoch %d's commit", req.GetFromEpoch())
	}
	cards, err := s.activeCards(ctx, app, in.members)
	if err != nil {
		return err
	}
	signer := cards[identity]
	if signer == nil || !bytes.Equal(signer.GetCardId(), content.SignerCardID) {
		return errs.Invalidf("commit.content signer_card_id is not the caller's active card: sign with your current card")
	}
	signerCard := &e2ee.Card{ID: signer.GetCardId(), SigningKey: ed25519.PublicKey(signer.GetSigningPublicKey()), Suite: signer.GetSuite(), Identity: identity}
	if _, err := e2ee.VerifyEpochCommit(req.GetCommit(), req.GetGroupId(), content.Epoch, signerCard); err != nil {
		return refusal.E2EE("commit", err)
	}
	mismatch := &groupv1.CommitMismatch{}
	add := func(list *[]string, id string) {
		if len(*list) < maxMismatchList {
			*list = append(*list, id)
		}
	}
	isMember := make(map[string]bool, len(in.members))
	for _, id := range in.members {
		isMember[id] = true
		card, key := cards[id], in.keys[id]
		switch {
		case card == nil && key != nil:
			add(&mismatch.OutdatedCard, id) // it has no active card now
		case card == nil:
		case key == nil:
			add(&mismatch.Missing, id)
		case !bytes.Equal(key.GetRecipientCardId(), card.GetCardId()):
			add(&mismatch.OutdatedCard, id)
		}
	}
	var strangers []string
	for id := range in.keys {
		if !isMember[id] {
			strangers = append(strangers, id)
		}
	}
	slices.Sort(strangers)
	for _, id := range strangers {
		add(&mismatch.Unexpected, id)
	}
	if len(mismatch.Missing)+len(mismatch.Unexpected)+len(mismatch.OutdatedCard) > 0 {
		return errs.Preconditionf("the wrapped keys do not cover exactly the active cards of group %s's members (%d missing, %d not members, %d to an outdated card): refetch their cards and commit again",
			req.GetGroupId(), len(mismatch.Missing), len(mismatch.Unexpected), len(mismatch.OutdatedCard)).WithDetails(mismatch)
	}
	wrapped := make([]*envelopev1.WrappedEpochKey, 0, len(in.keys))
	for id, k := range in.keys {
		if n := encSize(cards[id].GetSuite()); n != 0 && len(k.GetEnc()) != n {
			return errs.Invalidf("the key for %s has a %d-byte enc; its card's suite %s has %d", id, len(k.GetEnc()), cards[id].GetSuite(), n)
		}
		wrapped = append(wrapped, k)
	}
	if content.WrappedKeyCount != uint32(len(wrapped)) {
		return errs.Invalidf("commit.content wrapped_key_count is %d but the commit carries %d keys", content.WrappedKeyCount, len(wrapped))
	}
	if err := content.CheckWrappedKeys(wrapped); err != nil {
		return errs.Invalidf("commit.content wrapped_keys_digest does not match the wrapped keys: %v", err)
	}
	return nil
}

// writeCommit stores the commit if nothing changed since in was read; retry reports
// that the members or their cards changed.
func (s *Server) writeCommit(app, identity string, req *groupv1.CommitEpochRequest, in *commitInput) (resp *groupv1.CommitEpochResponse, retry bool, err error) {
	now := s.now()
	err = s.update(func(tx Tx) error {
		g, me, err := loadForCommit(tx, app, req.GetGroupId(), identity, req.GetFromEpoch())
		if err != nil {
			return err
		}
		if g.GetMembershipVersion() != in.membershipVersion || g.GetCardsVersion() != in.cardsVersion || g.GetMembershipSequence() != in.group.GetMembershipSequence() {
			retry = true
			return nil
		}
		sum := sha256.Sum256(req.GetCommit().GetContent())
		epoch := g.GetEpoch() + 1
		rec := &storagev1.GroupEpochRecord{Epoch: epoch, Commit: req.GetCommit(), CommittedBy: identity, CommittedAt: timestamppb.New(now), CommitHash: sum[:]}
		if err := tx.PutEpoch(app, g.GetGroupId(), rec); err != nil {
			return err
		}
		stored := timestamppb.New(now)
		for id, k := range in.keys {
			if err := tx.PutEpochKey(app, g.GetGroupId(), id, &storagev1.GroupEpochKeyRecord{Epoch: epoch, WrappedKey: k, StoredAt: stored}); err != nil {
				return err
			}
		}
		if err := tx.DeleteUpload(app, g.GetGroupId(), identity); err != nil {
			return err
		}
		g.Epoch, g.CommitHash, g.CommittedBy = epoch, sum[:], identity
		g.EpochStartedAt, g.EpochMessageCount = timestamppb.New(now), 0
		g.RotationRequired, g.RotationReasons = false, nil
		touch(g, now)
		if err := reschedule(tx, g); err != nil {
			return err
		}
		if err := tx.PutGroup(g); err != nil {
			return err
		}
		if err := s.toMembers(tx, g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_EPOCH_COMMITTED, Actor: identity, Epoch: epoch}); err != nil {
			return err
		}
		resp = &groupv1.CommitEpochResponse{Commit: epochCommitView(rec), Group: viewFor(g, now, me)}
		return nil
	})
	return resp, retry, err
}

// GetEpochKeys implements GroupService.
func (s *Server) GetEpochKeys(ctx context.Context, req *groupv1.GetEpochKeysRequest) (*groupv1.GetEpochKeysResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	size, after, err := readUintPage(req, DefaultPage, MaxPage, req.GetAfterEpoch())
	if err != nil {
		return nil, err
	}
	resp := &groupv1.GetEpochKeysResponse{}
	err = s.store.View(func(tx Tx) error {
		g, _, err := loadAsMember(tx, p.AppID, req.GetGroupId(), p.Identity)
		if err != nil {
			return err
		}
		resp.CurrentEpoch = g.GetEpoch()
		return tx.EpochKeys(p.AppID, g.GetGroupId(), p.Identity, after, func(k *storagev1.GroupEpochKeyRecord) (bool, error) {
			if len(resp.Keys) == size {
				resp.NextPageToken = pageToken(strconv.FormatUint(resp.Keys[size-1].GetEpoch(), 10))
				return false, nil
			}
			e, err := tx.Epoch(p.AppID, g.GetGroupId(), k.GetEpoch())
			if err != nil {
				return false, err
			}
			resp.Keys = append(resp.Keys, &groupv1.EpochKey{Epoch: k.GetEpoch(), WrappedKey: k.GetWrappedKey(), Commit: epochCommitView(e), SharedBy: k.GetSharedBy()})
			return true, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// ShareEpochKeys implements GroupService.
func (s *Server) ShareEpochKeys(ctx context.Context, req *groupv1.ShareEpochKeysRequest) (*groupv1.ShareEpochKeysResponse, error) {
	p, err := s.groupCaller(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	shares := req.GetShares()
	if len(shares) == 0 || len(shares) > MaxSharesPerRequest {
		return nil, errs.Invalidf("shares holds %d entries; send 1 to %d", len(shares), MaxSharesPerRequest)
	}
	type pair struct {
		id    string
		epoch uint64
	}
	seen := map[pair]bool{}
	var recipients []string
	for i, sh := range shares {
		f := "shares[" + strconv.Itoa(i) + "]"
		if err := ident.ValidUser(f+".recipient", sh.GetRecipient()); err != nil {
			return nil, err
		}
		if sh.GetEpoch() == 0 {
			return nil, errs.Invalidf("%s.epoch is 0: epochs start at 1", f)
		}
		if sh.GetRecipient() == p.Identity {
			return nil, errs.Invalidf("%s.recipient is the caller: share with other members", f)
		}
		if err := validWrappedKey(f+".wrapped_key", sh.GetWrappedKey()); err != nil {
			return nil, err
		}
		k := pair{sh.GetRecipient(), sh.GetEpoch()}
		if seen[k] {
			return nil, errs.Invalidf("%s shares epoch %d with %s a second time", f, sh.GetEpoch(), sh.GetRecipient())
		}
		seen[k] = true
		if !slices.Contains(recipients, sh.GetRecipient()) {
			recipients = append(recipients, sh.GetRecipient())
		}
	}
	// Membership first, so that a non-member does not get to ask the card service.
	if err := s.store.View(func(tx Tx) error {
		_, _, err := loadAsMember(tx, p.AppID, req.GetGroupId(), p.Identity)
		return err
	}); err != nil {
		return nil, err
	}
	cards, err := s.activeCards(ctx, p.AppID, recipients)
	if err != nil {
		return nil, err
	}
	now := s.now()
	err = s.update(func(tx Tx) error {
		g, _, err := loadAsMember(tx, p.AppID, req.GetGroupId(), p.Identity)
		if err != nil {
			return err
		}
		if groupv1.HistoryVisibility(g.GetHistoryVisibility()) != groupv1.HistoryVisibility_HISTORY_VISIBILITY_SHARED {
			return errs.Preconditionf("group %s's history visibility is SINCE_JOIN: older keys are not shared", g.GetGroupId())
		}
		// Each recipient's membership is read once, however many epochs it is given.
		members := make(map[string]*storagev1.GroupMemberRecord, len(recipients))
		for _, id := range recipients {
			if members[id], err = tx.Member(p.AppID, g.GetGroupId(), id); err != nil {
				return err
			}
		}
		for i, sh := range shares {
			f := "shares[" + strconv.Itoa(i) + "]"
			r := members[sh.GetRecipient()]
			if r == nil {
				return errs.Preconditionf("%s.recipient %s is not a member of group %s", f, sh.GetRecipient(), g.GetGroupId())
			}
			if sh.GetEpoch() >= r.GetFirstEpoch() || sh.GetEpoch() > g.GetEpoch() {
				return errs.Preconditionf("%s.epoch %d is not older than %s's first epoch %d: it gets that key from the commit", f, sh.GetEpoch(), sh.GetRecipient(), r.GetFirstEpoch())
			}
			if own, err := tx.EpochKey(p.AppID, g.GetGroupId(), p.Identity, sh.GetEpoch()); err != nil {
				return err
			} else if own == nil {
				return errs.Permissionf("%s: the caller holds no key of epoch %d, so it cannot share one", f, sh.GetEpoch())
			}
			card := cards[sh.GetRecipient()]
			if card == nil || !bytes.Equal(card.GetCardId(), sh.GetWrappedKey().GetRecipientCardId()) {
				return errs.Preconditionf("%s.wrapped_key is not wrapped to %s's active card: refetch its card", f, sh.GetRecipient())
			}
			if n := encSize(card.GetSuite()); n != 0 && len(sh.GetWrappedKey().GetEnc()) != n {
				return errs.Invalidf("%s.wrapped_key.enc is %d bytes; the card's suite has %d", f, len(sh.GetWrappedKey().GetEnc()), n)
			}
			if err := tx.PutEpochKey(p.AppID, g.GetGroupId(), sh.GetRecipient(), &storagev1.GroupEpochKeyRecord{Epoch: sh.GetEpoch(), WrappedKey: sh.GetWrappedKey(), SharedBy: p.Identity, StoredAt: timestamppb.New(now)}); err != nil {
				return err
			}
		}
		for _, r := range recipients {
			ev := s.withGroup(g, &groupv1.GroupEvent{Kind: groupv1.GroupEventKind_GROUP_EVENT_KIND_EPOCH_KEYS_SHARED, Actor: p.Identity, Identities: []string{r}})
			if err := s.emit(tx, p.AppID, ev, []string{r}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &groupv1.ShareEpochKeysResponse{StoredCount: uint32(len(shares))}, nil
}

// GetEpochState implements GroupService.
func (s *Server) GetEpochState(ctx context.Context, req *groupv1.GetEpochStateRequest) (*groupv1.GetEpochStateResponse, error) {
	var resp *groupv1.GetEpochStateResponse
	err := s.viewAsCaller(ctx, req.GetGroupId(), func(tx Tx, p *auth.Principal) error {
		g, _, err := loadAsMember(tx, p.AppID, req.GetGroupId(), p.Identity)
		if err != nil {
			return err
		}
		e, err := tx.Epoch(p.AppID, g.GetGroupId(), g.GetEpoch())
		if err != nil {
			return err
		}
		required, reasons := rotationState(g, s.now())
		resp = &groupv1.GetEpochStateResponse{
			GroupId:            g.GetGroupId(),
			EncryptionMode:     mode(g),
			Epoch:              g.GetEpoch(),
			Commit:             epochCommitView(e),
			RotationRequired:   required,
			RotationReasons:    reasons,
			EpochMessageCount:  g.GetEpochMessageCount(),
			MemberCount:        g.GetMemberCount(),
			MembershipVersion:  g.GetMembershipVersion(),
			MembershipSequence: g.GetMembershipSequence(),
			MembershipHash:     g.GetMembershipHash(),
		}
		if at := dueAt(g); !at.IsZero() {
			resp.RotationDueAt = timestamppb.New(at)
		}
		return nil
	})
	return resp, err
}
