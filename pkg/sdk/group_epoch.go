package sdk

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// Limits of the epoch calls.
const (
	// commitChunk is the most wrapped keys one StageEpochKeys or CommitEpoch carries.
	commitChunk = 500
	// rotationAttempts bounds how often a rotation refetches the members and their
	// cards after the service found them changed (CommitMismatch).
	rotationAttempts = 4
)

// statusDetail returns the first detail of type T in err's gRPC status, or nil.
func statusDetail[T proto.Message](err error) T {
	var zero T
	st, ok := status.FromError(err)
	if !ok {
		return zero
	}
	for _, d := range st.Details() {
		if t, ok := d.(T); ok {
			return t
		}
	}
	return zero
}

// Rotate commits a new epoch now: a fresh key wrapped to the active card of every
// member. The SDK rotates by itself whenever the service requires it; Rotate is for a
// client that wants a new key sooner. A lost race to another member's commit is not an
// error: the winner's key is loaded instead.
func (g *Group) Rotate(ctx context.Context) error {
	st, err := g.c.groupClient().GetEpochState(ctx, &groupv1.GetEpochStateRequest{GroupId: g.ID})
	if err != nil {
		return err
	}
	if st.GetEncryptionMode() == groupv1.EncryptionMode_ENCRYPTION_MODE_OFF {
		return ErrEncryptionOff
	}
	return g.commitFrom(ctx, st)
}

// currentKey returns the group's current epoch and its key, committing a new epoch
// first if the group has none or the service requires one, and fetching the key if
// this client does not hold it.
func (g *Group) currentKey(ctx context.Context) (uint64, []byte, error) {
	var epoch uint64
	var key []byte
	var stale bool
	g.c.groups.update(g.ID, func(s *groupState) {
		epoch, key, stale = s.current, s.keys[s.current], s.rotationRequired
	})
	if epoch > 0 && key != nil && !stale {
		return epoch, key, nil
	}
	st, err := g.c.groupClient().GetEpochState(ctx, &groupv1.GetEpochStateRequest{GroupId: g.ID})
	if err != nil {
		return 0, nil, err
	}
	g.c.groups.update(g.ID, func(s *groupState) {
		s.mode = st.GetEncryptionMode()
		s.current, s.rotationRequired = st.GetEpoch(), st.GetRotationRequired()
	})
	if st.GetEncryptionMode() == groupv1.EncryptionMode_ENCRYPTION_MODE_OFF {
		return 0, nil, ErrEncryptionOff
	}
	if st.GetEpoch() == 0 || st.GetRotationRequired() {
		if err := g.commitFrom(ctx, st); err != nil {
			return 0, nil, err
		}
	}
	// After our commit, or a winner's that commitFrom loaded, or no rotation at all.
	g.c.groups.update(g.ID, func(s *groupState) { epoch, key = s.current, s.keys[s.current] })
	if key == nil {
		if key, err = g.epochKey(ctx, epoch); err != nil {
			return 0, nil, err
		}
	}
	return epoch, key, nil
}

// commitFrom commits the epoch after st's, for the members of the group's verified
// membership chain at the head st names (never the service's member list): their
// active cards get the key, and the commit names that head. When the service says the
// members or their cards changed meanwhile (CommitMismatch), it verifies the
// statements it missed and fetches the cards again; if another member's commit wins
// the race, it loads that one's key.
func (g *Group) commitFrom(ctx context.Context, st *groupv1.GetEpochStateResponse) error {
	ks, kp, myCard, err := g.c.current()
	if err != nil {
		return err
	}
	me := ks.Identity()
	from := st.GetEpoch()
	previous, err := g.previousCommitHash(ctx, st)
	if err != nil {
		return err
	}
	// keep records our new epoch: its key, its commit's hash and the predecessor it
	// names.
	keep := func(s *groupState, ep *e2ee.Epoch, head e2ee.MembershipHead) {
		s.keys[ep.Number] = ep.Key
		s.commitHashes[ep.Number] = ep.CommitHash
		s.heads[ep.Number] = head
		if ep.Number > 1 {
			s.vouched[ep.Number-1] = previous
		}
	}
	var lastErr error
	headSeq, headHash := st.GetMembershipSequence(), st.GetMembershipHash()
	for range rotationAttempts {
		m, err := g.membershipAt(ctx, headSeq, headHash)
		if err != nil {
			return err
		}
		if m.Role(me) == e2ee.RoleNone {
			return fmt.Errorf("%w: %s is not a member of %s in its verified membership chain", e2ee.ErrNotMember, me, g.ID)
		}
		identities := m.Members()
		head := e2ee.MembershipHead{Sequence: m.Sequence(), Hash: m.Head()}
		found, err := g.c.TrustedCards(ctx, identities...)
		if err != nil {
			return err
		}
		if mine, ok := found[me]; !ok || !sameID(mine.ID, myCard) {
			return errNotActiveHere(me)
		}
		// Members without an active card get no key; the service does not count them.
		var cards []*e2ee.Card
		var owners []string
		for _, id := range identities {
			if card, ok := found[id]; ok {
				cards = append(cards, card.Card)
				owners = append(owners, id)
			}
		}
		ep, err := e2ee.NewEpoch(kp, myCard, g.ID, from+1, previous, head, cards, g.c.cfg.Now())
		if err != nil {
			return err
		}
		keys := make([]*groupv1.MemberKey, len(ep.WrappedKeys))
		for i, w := range ep.WrappedKeys {
			keys[i] = &groupv1.MemberKey{Identity: owners[i], WrappedKey: w}
		}
		err = g.commit(ctx, from, ep.Commit, keys)
		conflict := statusDetail[*groupv1.EpochConflict](err)
		// Committed, or our own commit won before its reply was lost.
		if err == nil || conflict != nil && bytes.Equal(conflict.GetCurrentCommitHash(), ep.CommitHash) {
			g.c.groups.update(g.ID, func(s *groupState) {
				keep(s, ep, head)
				if ep.Number >= s.current { // an event may have moved it on already
					s.current, s.rotationRequired = ep.Number, false
				}
			})
			return nil
		}
		if conflict != nil {
			g.c.groups.update(g.ID, func(s *groupState) {
				if conflict.GetCurrentEpoch() >= s.current {
					s.current, s.rotationRequired = conflict.GetCurrentEpoch(), false
				}
			})
			if conflict.GetCurrentEpoch() > 0 {
				_, err := g.epochKey(ctx, conflict.GetCurrentEpoch())
				return err
			}
			return nil
		}
		mismatch := statusDetail[*groupv1.CommitMismatch](err)
		if mismatch == nil {
			return err
		}
		lastErr = err // the members or their cards changed under us: refetch them
		headSeq, headHash = mismatch.GetMembershipSequence(), mismatch.GetMembershipHash()
	}
	return fmt.Errorf("%w: %w", ErrRotationFailed, lastErr)
}

// commit sends a signed commit with its wrapped keys, staging them in chunks first
// when there are more than one request carries.
func (g *Group) commit(ctx context.Context, from uint64, commit *e2ee.SignedEpochCommit, keys []*groupv1.MemberKey) error {
	client := g.c.groupClient()
	upload := ""
	for len(keys) > commitChunk {
		resp, err := client.StageEpochKeys(ctx, &groupv1.StageEpochKeysRequest{GroupId: g.ID, FromEpoch: from, UploadId: upload, Keys: keys[:commitChunk]})
		if err != nil {
			return err
		}
		upload, keys = resp.GetUploadId(), keys[commitChunk:]
	}
	_, err := client.CommitEpoch(ctx, &groupv1.CommitEpochRequest{GroupId: g.ID, FromEpoch: from, Commit: commit, Keys: keys, UploadId: upload})
	return err
}

// epochKey returns the client's key of epoch, fetching and verifying it (with the
// epochs after it in the same page) if the client does not hold it yet.
func (g *Group) epochKey(ctx context.Context, epoch uint64) ([]byte, error) {
	if epoch == 0 {
		return nil, fmt.Errorf("%w: epoch 0 of %s has no key (no epoch was committed yet)", e2ee.ErrWrongEpoch, g.ID)
	}
	if key := g.c.groups.key(g.ID, epoch); key != nil {
		return key, nil
	}
	resp, err := g.c.groupClient().GetEpochKeys(ctx, &groupv1.GetEpochKeysRequest{GroupId: g.ID, AfterEpoch: epoch - 1})
	if status.Code(err) == codes.PermissionDenied {
		return nil, fmt.Errorf("%w: %w", e2ee.ErrNotMember, err)
	}
	if err != nil {
		return nil, err
	}
	// Newest first: a verified commit vouches for the one it names as its predecessor,
	// whose signer may have left since.
	var firstErr error
	keys := resp.GetKeys()
	signers := signerCards{}
	for i := len(keys) - 1; i >= 0; i-- {
		if err := g.acceptEpochKey(ctx, keys[i], signers); err != nil && keys[i].GetEpoch() == epoch {
			firstErr = err
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if key := g.c.groups.key(g.ID, epoch); key != nil {
		return key, nil
	}
	return nil, fmt.Errorf("%w: the service holds no key of epoch %d of %s for this user (not a member then?)", e2ee.ErrWrongEpoch, epoch, g.ID)
}

// previousCommitHash returns the hash of the commit of st's epoch, which the next
// commit names: so a commit vouches for its predecessor. The hash is that of a commit
// this client verified: one it holds, or the one st carries, checked now (its signer
// was a member at the membership head it names, whether or not it still is).
func (g *Group) previousCommitHash(ctx context.Context, st *groupv1.GetEpochStateResponse) ([]byte, error) {
	if st.GetEpoch() == 0 {
		return nil, nil
	}
	var held []byte
	g.c.groups.update(g.ID, func(s *groupState) { held = s.commitHashes[st.GetEpoch()] })
	served := st.GetCommit().GetCommitHash()
	if held != nil {
		if !bytes.Equal(held, served) {
			return nil, fmt.Errorf("%w: the service's commit of epoch %d is not the one this client verified", e2ee.ErrBadSignature, st.GetEpoch())
		}
		return held, nil
	}
	commit, err := g.verifyCommit(ctx, st.GetEpoch(), st.GetCommit(), nil)
	switch {
	case err != nil:
		return nil, err
	case !bytes.Equal(commit.Hash, served):
		return nil, fmt.Errorf("%w: the service's hash of the commit of epoch %d is not the commit's", e2ee.ErrMalformed, st.GetEpoch())
	}
	g.c.groups.update(g.ID, func(s *groupState) { s.accept(commit) })
	return commit.Hash, nil
}

// verifyCommit checks a commit the service returned for epoch: its signature by the
// card it names, which must have been active when the commit was made, and the
// membership head it names, which must be a statement of the group's verified chain
// at which the signer was a member. signers, if not nil, keeps the signer cards of a
// batch of commits, so each is fetched once.
func (g *Group) verifyCommit(ctx context.Context, epoch uint64, ec *groupv1.EpochCommit, signers signerCards) (*e2ee.EpochCommit, error) {
	signed := ec.GetCommit()
	parsed, err := e2ee.ParseEpochCommit(signed)
	if err != nil {
		return nil, err
	}
	signer, err := signers.get(ctx, g.c, parsed.SignerCardID)
	if err != nil {
		return nil, fmt.Errorf("sdk: the signer card of epoch %d: %w", epoch, err)
	}
	if committedBy := ec.GetCommittedBy(); committedBy != "" && committedBy != signer.Identity {
		return nil, fmt.Errorf("%w: epoch %d is signed by a card of %s; the service says %s committed it", e2ee.ErrWrongSender, epoch, signer.Identity, committedBy)
	}
	if err := g.checkHeadMember(ctx, parsed.Membership, signer.Identity); err != nil {
		return nil, fmt.Errorf("epoch %d commit: %w", epoch, err)
	}
	commit, err := e2ee.VerifyEpochCommit(signed, g.ID, epoch, signer.Card)
	if err != nil {
		return nil, err
	}
	if err := g.c.checkCardLifetime(signer, commit.CreatedAt); err != nil {
		return nil, fmt.Errorf("epoch %d commit: %w", epoch, err)
	}
	return commit, nil
}

// signerCards are the signer cards fetched while verifying one batch of commits, which
// a few cards sign.
type signerCards map[string]*Card

// get returns the card id, fetched (CardByID) unless m holds it; a nil m holds none.
func (m signerCards) get(ctx context.Context, c *Client, id []byte) (*Card, error) {
	if card, ok := m[string(id)]; ok {
		return card, nil
	}
	card, err := c.CardByID(ctx, id)
	if err == nil {
		err = c.trustSender(ctx, card)
	}
	if err != nil {
		return nil, err
	}
	if m != nil {
		m[string(id)] = card
	}
	return card, nil
}

// acceptEpochKey verifies an epoch key from the service and keeps it: its commit
// (verifyCommit, with signers), the unwrapped key against the signed key commitment,
// and the chain to the neighbouring commits this client holds.
func (g *Group) acceptEpochKey(ctx context.Context, ek *groupv1.EpochKey, signers signerCards) error {
	ks, _, _, err := g.c.current()
	if err != nil {
		return err
	}
	commit, err := g.verifyCommit(ctx, ek.GetEpoch(), ek.GetCommit(), signers)
	if err != nil {
		return err
	}
	key, err := commit.OpenEpochKey(ek.GetWrappedKey(), ks.KeyFor)
	if err != nil {
		return err
	}
	var chainErr error
	g.c.groups.update(g.ID, func(s *groupState) {
		if prev, ok := s.commitHashes[commit.Epoch-1]; ok && !bytes.Equal(prev, commit.PreviousCommitHash) {
			chainErr = fmt.Errorf("%w: epoch %d does not name the commit of epoch %d this client holds", e2ee.ErrBadSignature, commit.Epoch, commit.Epoch-1)
			return
		}
		if named, ok := s.vouched[commit.Epoch]; ok && !bytes.Equal(named, commit.Hash) {
			chainErr = fmt.Errorf("%w: the commit of epoch %d is not the one epoch %d names", e2ee.ErrBadSignature, commit.Epoch, commit.Epoch+1)
			return
		}
		s.accept(commit)
		s.keys[commit.Epoch] = key
	})
	return chainErr
}

// checkHeadMember reports an error unless head is a statement of the group's verified
// membership chain (ErrMembershipChain with e2ee.ErrBrokenChain: the service made the
// commit or showed this client another chain) and identity was a member at it
// (e2ee.ErrNotMember). A head beyond the statements verified so far is fetched and
// verified first.
func (g *Group) checkHeadMember(ctx context.Context, head e2ee.MembershipHead, identity string) error {
	return g.withChain(ctx, head.Sequence, nil, false, func(m *e2ee.Membership) error {
		if !bytes.Equal(m.HashAt(head.Sequence), head.Hash) {
			return fmt.Errorf("%w: %w: membership statement %d (%x) is not in the chain this client verified (head %d)",
				ErrMembershipChain, e2ee.ErrBrokenChain, head.Sequence, head.Hash, m.Sequence())
		}
		if !m.MemberAt(identity, head.Sequence) {
			return fmt.Errorf("%w: %s was not a member of %s at membership statement %d", e2ee.ErrNotMember, identity, g.ID, head.Sequence)
		}
		return nil
	})
}

// GroupEventType is the Event.type of the group service's events.
const GroupEventType = "umbra.group.v1.GroupEvent"

// GroupEvent decodes a group event from a Subscribe item; ok is false for an item that
// is not one.
func GroupEvent(item *messagingv1.SubscribeResponse) (ev *groupv1.GroupEvent, ok bool) {
	return decodeEvent[groupv1.GroupEvent](item, GroupEventType)
}

// decodeEvent decodes item's event as a T if it is an event of type eventType; ok is
// false for any other item, or a payload that does not parse.
func decodeEvent[T any, PT interface {
	*T
	proto.Message
}](item *messagingv1.SubscribeResponse, eventType string) (ev PT, ok bool) {
	e := item.GetEvent()
	if e == nil || e.GetType() != eventType {
		return nil, false
	}
	ev = new(T)
	if err := proto.Unmarshal(e.GetPayload(), ev); err != nil {
		return nil, false
	}
	return ev, true
}

// observeGroupEvent updates what the client knows of a group from one of its events:
// a required rotation makes the next encrypted message commit a new epoch without
// waiting to be refused; a new epoch makes it fetch that key. (Who is a member the
// client learns from the verified membership chain only, never from an event.)
func (c *Client) observeGroupEvent(item *messagingv1.SubscribeResponse) {
	ev, ok := GroupEvent(item)
	if !ok {
		return
	}
	if ev.GetKind() == groupv1.GroupEventKind_GROUP_EVENT_KIND_DELETED {
		c.groups.forget(ev.GetGroupId())
		return
	}
	c.groups.update(ev.GetGroupId(), func(s *groupState) {
		switch ev.GetKind() {
		case groupv1.GroupEventKind_GROUP_EVENT_KIND_ROTATION_REQUIRED:
			if ev.GetEpoch() >= s.current {
				s.current, s.rotationRequired = ev.GetEpoch(), true
			}
		case groupv1.GroupEventKind_GROUP_EVENT_KIND_EPOCH_COMMITTED:
			if ev.GetEpoch() > s.current {
				s.current, s.rotationRequired = ev.GetEpoch(), false
			}
		}
		if ev.GetGroup() != nil {
			s.mode = ev.GetGroup().GetEncryptionMode()
		}
	})
}

// isEpochRequired reports the EpochRequired detail of a refused send, or nil.
func isEpochRequired(err error) *groupv1.EpochRequired {
	if status.Code(err) != codes.FailedPrecondition {
		return nil
	}
	return statusDetail[*groupv1.EpochRequired](err)
}

// ShareHistory gives recipient, a member who joined later, the keys of the epochs
// before it joined that this client holds, re-wrapped to recipient's active card, so
// that it can read the older messages. The group's history visibility must be SHARED
// (FAILED_PRECONDITION otherwise). The recipient checks each key against its epoch's
// signed commit, so a sharer cannot substitute one. It returns how many keys it shared.
func (g *Group) ShareHistory(ctx context.Context, recipient string) (int, error) {
	info, err := g.Info(ctx)
	if err != nil {
		return 0, err
	}
	var joined time.Time
	for _, m := range info.GetMembers() {
		if m.GetIdentity() == recipient {
			joined = m.GetJoinedAt().AsTime()
		}
	}
	if joined.IsZero() {
		return 0, fmt.Errorf("%w: %s is not a member of %s", e2ee.ErrNotMember, recipient, g.ID)
	}
	found, err := g.c.TrustedCards(ctx, recipient)
	if err != nil {
		return 0, err
	}
	card, ok := found[recipient]
	if !ok {
		return 0, fmt.Errorf("%w: %s", ErrNoCard, recipient)
	}
	signers := signerCards{}
	shares, err := allPages(func(token string) ([]*groupv1.EpochShare, string, error) {
		resp, err := g.c.groupClient().GetEpochKeys(ctx, &groupv1.GetEpochKeysRequest{GroupId: g.ID, PageToken: token})
		if err != nil {
			return nil, "", err
		}
		var page []*groupv1.EpochShare
		keys := resp.GetKeys()
		for i := len(keys) - 1; i >= 0; i-- {
			ek := keys[i]
			if !ek.GetCommit().GetCommittedAt().AsTime().Before(joined) {
				continue
			}
			key := g.c.groups.key(g.ID, ek.GetEpoch())
			if key == nil {
				if err := g.acceptEpochKey(ctx, ek, signers); err != nil {
					return nil, "", fmt.Errorf("epoch %d: %w", ek.GetEpoch(), err)
				}
				key = g.c.groups.key(g.ID, ek.GetEpoch())
			}
			w, err := e2ee.WrapEpochKey(g.ID, ek.GetEpoch(), key, card.Card)
			if err != nil {
				return nil, "", err
			}
			page = append(page, &groupv1.EpochShare{Epoch: ek.GetEpoch(), Recipient: recipient, WrappedKey: w})
		}
		return page, resp.GetNextPageToken(), nil
	})
	if err != nil {
		return 0, err
	}
	for i := 0; i < len(shares); i += commitChunk {
		if _, err := g.c.groupClient().ShareEpochKeys(ctx, &groupv1.ShareEpochKeysRequest{GroupId: g.ID, Shares: shares[i:min(i+commitChunk, len(shares))]}); err != nil {
			return i, err
		}
	}
	return len(shares), nil
}
