package group

import (
	"bytes"
	"crypto/rand"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// keyEpochs returns the epochs of u's keys of group, or the error.
func (e *env) keyEpochs(u *user, group string) ([]uint64, error) {
	resp, err := e.client.GetEpochKeys(u.ctx(), &groupv1.GetEpochKeysRequest{GroupId: group})
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, k := range resp.GetKeys() {
		out = append(out, k.GetEpoch())
	}
	return out, nil
}

func (e *env) state(t testing.TB, u *user, group string) *groupv1.GetEpochStateResponse {
	t.Helper()
	st, err := e.client.GetEpochState(u.ctx(), &groupv1.GetEpochStateRequest{GroupId: group})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestEpochs: commits, keys and sends; removed, banned and departed members get no
// later key and cannot send; commits that do not cover exactly the members' active
// cards are refused.
func TestEpochs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	_, group, us := e.newTeam(t, 3, "owner", "bob", "carol", "dave", "erin")
	owner, bob, carol, dave, erin := us[0], us[1], us[2], us[3], us[4]

	// Epoch 0: encrypted messages wait for the first commit.
	for _, ep := range []uint64{0, 1} {
		_, err := e.authorize(bob, group, ep)
		wantCode(t, err, codes.FailedPrecondition, "epoch required")
		if d := detail[*groupv1.EpochRequired](err); d == nil || d.GetCurrentEpoch() != 0 || !d.GetRotationRequired() || d.GetMessageEpoch() != ep {
			t.Errorf("EpochRequired %v", d)
		}
	}

	c1 := e.commit(t, group, bob, owner, bob, carol)
	var err error
	if c1.GetCommit().GetEpoch() != 1 || c1.GetGroup().GetRotationRequired() || c1.GetCommit().GetCommittedBy() != bob.identity || len(c1.GetCommit().GetCommitHash()) != 32 {
		t.Fatalf("commit 1: %v", c1)
	}
	for _, u := range []*user{owner, bob, carol} {
		keys, err := e.client.GetEpochKeys(u.ctx(), &groupv1.GetEpochKeysRequest{GroupId: group})
		if err != nil || len(keys.GetKeys()) != 1 || !bytes.Equal(keys.GetKeys()[0].GetWrappedKey().GetRecipientCardId(), u.cardID) ||
			!bytes.Equal(keys.GetKeys()[0].GetCommit().GetCommitHash(), c1.GetCommit().GetCommitHash()) || keys.GetCurrentEpoch() != 1 {
			t.Errorf("%s's keys: %v, %v", u.identity, keys, err)
		}
	}
	if r, err := e.authorize(carol, group, 1); err != nil || r.GetEpoch() != 1 || r.GetEncryptionMode() != groupv1.EncryptionMode_ENCRYPTION_MODE_OPTIONAL {
		t.Fatalf("send at epoch 1: %v, %v", r, err)
	}
	_, err = e.authorize(carol, group, 2)
	wantCode(t, err, codes.FailedPrecondition, "epoch required")
	if d := detail[*groupv1.EpochRequired](err); d == nil || d.GetCurrentEpoch() != 1 || d.GetRotationRequired() {
		t.Errorf("a future epoch: %v", d)
	}

	// Refused commits from epoch 1 change nothing.
	hash1 := c1.GetCommit().GetCommitHash()
	commitReq := func(from uint64, prev []byte, signer *user, recipients ...*user) *groupv1.CommitEpochRequest {
		c, keys := e.commitFor(t, group, from, prev, signer, recipients...)
		return &groupv1.CommitEpochRequest{GroupId: group, FromEpoch: from, Commit: c, Keys: keys}
	}
	outdated := *carol
	outdated.cardID = make([]byte, 32)
	rand.Read(outdated.cardID)
	forged := commitReq(1, hash1, bob, owner, bob, carol)
	forged.Commit.Signature = slices.Clone(forged.Commit.Signature)
	forged.Commit.Signature[0] ^= 1
	for _, tc := range []struct {
		name     string
		as       *user
		req      *groupv1.CommitEpochRequest
		code     codes.Code
		msg      string
		mismatch *groupv1.CommitMismatch
	}{
		{"misses a member", bob, commitReq(1, hash1, bob, owner, bob), codes.FailedPrecondition, "do not cover", &groupv1.CommitMismatch{Missing: []string{carol.identity}}},
		{"includes a non-member", bob, commitReq(1, hash1, bob, owner, bob, carol, dave), codes.FailedPrecondition, "do not cover", &groupv1.CommitMismatch{Unexpected: []string{dave.identity}}},
		{"uses an old card", bob, commitReq(1, hash1, bob, owner, bob, &outdated), codes.FailedPrecondition, "do not cover", &groupv1.CommitMismatch{OutdatedCard: []string{carol.identity}}},
		{"stale", bob, commitReq(0, nil, bob, owner, bob, carol), codes.Aborted, "another commit won", nil},
		{"by a non-member", dave, commitReq(1, hash1, dave, owner, bob, carol), codes.PermissionDenied, "not a member", nil},
		{"bad signature", bob, forged, codes.InvalidArgument, "signature", nil},
		{"signed with another's card", carol, commitReq(1, hash1, bob, owner, bob, carol), codes.InvalidArgument, "signer_card_id", nil},
		{"wrong previous hash", bob, commitReq(1, make([]byte, 32), bob, owner, bob, carol), codes.InvalidArgument, "previous_commit_hash", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshot(t)
			_, err := e.client.CommitEpoch(tc.as.ctx(), tc.req)
			wantCode(t, err, tc.code, tc.msg)
			if tc.mismatch != nil {
				if d := detail[*groupv1.CommitMismatch](err); d == nil || !slices.Equal(d.GetMissing(), tc.mismatch.GetMissing()) ||
					!slices.Equal(d.GetUnexpected(), tc.mismatch.GetUnexpected()) || !slices.Equal(d.GetOutdatedCard(), tc.mismatch.GetOutdatedCard()) {
					t.Errorf("CommitMismatch %v; want %v", d, tc.mismatch)
				}
			}
			if tc.code == codes.Aborted {
				if d := detail[*groupv1.EpochConflict](err); d == nil || d.GetCurrentEpoch() != 1 || !bytes.Equal(d.GetCurrentCommitHash(), hash1) || d.GetCommittedBy() != bob.identity {
					t.Errorf("EpochConflict %v", d)
				}
			}
			if !maps.Equal(before, e.snapshot(t)) {
				t.Error("the refused commit changed the store")
			}
		})
	}

	// Kicked: carol gets no later key and cannot send.
	if _, err := e.client.RemoveMember(owner.ctx(), &groupv1.RemoveMemberRequest{GroupId: group, Identity: carol.identity}); err != nil {
		t.Fatal(err)
	}
	_, err = e.authorize(bob, group, 1)
	wantCode(t, err, codes.FailedPrecondition, "epoch required")
	if d := detail[*groupv1.EpochRequired](err); d == nil || !d.GetRotationRequired() || !slices.Equal(d.GetRotationReasons(), []groupv1.RotationReason{groupv1.RotationReason_ROTATION_REASON_MEMBERSHIP_CHANGED}) {
		t.Errorf("after the removal: %v", d)
	}
	_, err = e.client.CommitEpoch(bob.ctx(), commitReq(1, hash1, bob, owner, bob, carol))
	wantCode(t, err, codes.FailedPrecondition, "do not cover")
	c2 := e.commit(t, group, owner, owner, bob)
	_, err = e.authorize(carol, group, 2)
	wantCode(t, err, codes.PermissionDenied, "not a member")
	_, err = e.keyEpochs(carol, group)
	wantCode(t, err, codes.PermissionDenied, "not a member")

	// Back as a member, carol starts afresh: no key of the epochs she missed or had.
	if _, err := e.client.AddMembers(owner.ctx(), &groupv1.AddMembersRequest{GroupId: group, Identities: identities(carol, erin)}); err != nil {
		t.Fatal(err)
	}
	if ks, err := e.keyEpochs(carol, group); err != nil || len(ks) != 0 {
		t.Errorf("carol's keys on her return: %v, %v", ks, err)
	}
	c3 := e.commit(t, group, carol, owner, bob, carol, erin)
	if ks, err := e.keyEpochs(carol, group); err != nil || !slices.Equal(ks, []uint64{3}) {
		t.Errorf("carol's keys: %v, %v; want epoch 3 only", ks, err)
	}
	if ks, err := e.keyEpochs(bob, group); err != nil || !slices.Equal(ks, []uint64{1, 2, 3}) {
		t.Errorf("bob's keys: %v, %v", ks, err)
	}
	if c3.GetCommit().GetEpoch() != 3 || !bytes.Equal(e.state(t, bob, group).GetCommit().GetCommitHash(), c3.GetCommit().GetCommitHash()) || bytes.Equal(c2.GetCommit().GetCommitHash(), c3.GetCommit().GetCommitHash()) {
		t.Errorf("commit 3: %v", c3)
	}

	// Banned and departed: the same.
	if _, err := e.client.BanMember(owner.ctx(), &groupv1.BanMemberRequest{GroupId: group, Identity: carol.identity}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.LeaveGroup(erin.ctx(), &groupv1.LeaveGroupRequest{GroupId: group}); err != nil {
		t.Fatal(err)
	}
	e.commit(t, group, bob, owner, bob)
	for _, u := range []*user{carol, erin} {
		_, err = e.keyEpochs(u, group)
		wantCode(t, err, codes.PermissionDenied, "not a member")
		_, err = e.authorize(u, group, 4)
		wantCode(t, err, codes.PermissionDenied, "not a member")
	}
	if ks, err := e.keyEpochs(owner, group); err != nil || !slices.Equal(ks, []uint64{1, 2, 3, 4}) {
		t.Errorf("owner's keys: %v, %v", ks, err)
	}
	// Keys page in ascending order.
	p1, err := e.client.GetEpochKeys(owner.ctx(), &groupv1.GetEpochKeysRequest{GroupId: group, AfterEpoch: 1, PageSize: 2})
	if err != nil || len(p1.GetKeys()) != 2 || p1.GetKeys()[0].GetEpoch() != 2 || p1.GetNextPageToken() == "" {
		t.Fatalf("page 1: %v, %v", p1, err)
	}
	p2, err := e.client.GetEpochKeys(owner.ctx(), &groupv1.GetEpochKeysRequest{GroupId: group, PageSize: 2, PageToken: p1.GetNextPageToken()})
	if err != nil || len(p2.GetKeys()) != 1 || p2.GetKeys()[0].GetEpoch() != 4 || p2.GetNextPageToken() != "" {
		t.Fatalf("page 2: %v, %v", p2, err)
	}
}

// TestConcurrentCommits: of members committing from the same epoch at once, exactly
// one wins; the others get ABORTED with the winner's commit hash.
func TestConcurrentCommits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true, quiet: true})
	a := e.newApp(t)
	us := e.newUsers(t, a, true, "u0", "u1", "u2", "u3", "u4", "u5")
	group := e.groupID(t, a, "race")
	e.create(t, us[0], group, us[1:]...)
	for round := range 3 {
		st := e.state(t, us[0], group)
		reqs := make([]*groupv1.CommitEpochRequest, len(us))
		for i, u := range us {
			c, keys := e.commitFor(t, group, st.GetEpoch(), st.GetCommit().GetCommitHash(), u, us...)
			reqs[i] = &groupv1.CommitEpochRequest{GroupId: group, FromEpoch: st.GetEpoch(), Commit: c, Keys: keys}
		}
		var wg sync.WaitGroup
		errsOf := make([]error, len(us))
		resps := make([]*groupv1.CommitEpochResponse, len(us))
		for i, u := range us {
			wg.Go(func() { resps[i], errsOf[i] = e.client.CommitEpoch(u.ctx(), reqs[i]) })
		}
		wg.Wait()
		var winner *groupv1.CommitEpochResponse
		for i, err := range errsOf {
			switch status.Code(err) {
			case codes.OK:
				if winner != nil {
					t.Fatalf("round %d: two commits won", round)
				}
				winner = resps[i]
			case codes.Aborted:
			default:
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if winner == nil {
			t.Fatalf("round %d: no commit won", round)
		}
		for _, err := range errsOf {
			if err != nil {
				if d := detail[*groupv1.EpochConflict](err); d == nil || !bytes.Equal(d.GetCurrentCommitHash(), winner.GetCommit().GetCommitHash()) {
					t.Errorf("round %d: loser's conflict %v", round, d)
				}
			}
		}
		if got := e.state(t, us[0], group).GetEpoch(); got != st.GetEpoch()+1 {
			t.Fatalf("round %d: epoch %d", round, got)
		}
	}
}

// TestCardRotation: a member's card rotation forces a new epoch before its next
// encrypted message is accepted, through the card feed and through the sender card of
// the message itself.
func TestCardRotation(t *testing.T) {
	t.Parallel()
	t.Run("card feed", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		owner, bob, group := e.twoMemberGroup(t)
		oldBob := *bob
		if err := e.publishCard(bob); err != nil {
			t.Fatal(err)
		}
		waitRotation(t, e, owner, group)
		for _, u := range []*user{bob, owner} {
			_, err := e.authorize(u, group, 1)
			wantCode(t, err, codes.FailedPrecondition, "epoch required")
			if d := detail[*groupv1.EpochRequired](err); d == nil || !d.GetRotationRequired() {
				t.Errorf("%v", d)
			}
		}
		_, err := e.client.CommitEpoch(owner.ctx(), func() *groupv1.CommitEpochRequest {
			c, keys := e.commitFor(t, group, 1, e.state(t, owner, group).GetCommit().GetCommitHash(), owner, owner, &oldBob)
			return &groupv1.CommitEpochRequest{GroupId: group, FromEpoch: 1, Commit: c, Keys: keys}
		}())
		wantCode(t, err, codes.FailedPrecondition, "do not cover")
		if d := detail[*groupv1.CommitMismatch](err); d == nil || !slices.Equal(d.GetOutdatedCard(), []string{bob.identity}) {
			t.Errorf("%v", d)
		}
		e.commit(t, group, bob, owner, bob)
		if _, err := e.authorize(bob, group, 2); err != nil {
			t.Fatal(err)
		}

		// Revoking a card no key is wrapped to changes nothing; revoking the card of
		// the current epoch's key requires a new epoch, which leaves bob out until he
		// has a card again.
		if _, err := e.cards.RevokeCard(bob.ctx(), &cardv1.RevokeCardRequest{CardId: oldBob.cardID}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.cards.RevokeCard(bob.ctx(), &cardv1.RevokeCardRequest{CardId: bob.cardID}); err != nil {
			t.Fatal(err)
		}
		waitRotation(t, e, owner, group)
		if st := e.state(t, owner, group); !slices.Equal(st.GetRotationReasons(), []groupv1.RotationReason{groupv1.RotationReason_ROTATION_REASON_CARD_CHANGED}) {
			t.Errorf("after the revocation: %v", st)
		}
		e.commit(t, group, owner, owner)
		if ks, err := e.keyEpochs(bob, group); err != nil || !slices.Equal(ks, []uint64{1, 2}) {
			t.Errorf("bob's keys without a card: %v, %v", ks, err)
		}
	})
	t.Run("a feed read late", func(t *testing.T) {
		// The follower applies bob's first publication only after bob rotated and a
		// commit wrapped the key to his new card: that publication is stale, and
		// requires no rotation. His next rotation still does.
		e := newEnv(t, envOptions{noLoops: true})
		a := e.newApp(t)
		us := e.newUsers(t, a, true, "owner", "bob")
		owner, bob := us[0], us[1]
		if err := e.publishCard(bob); err != nil {
			t.Fatal(err)
		}
		group := e.groupID(t, a, "team")
		e.create(t, owner, group, bob)
		e.commit(t, group, owner, owner, bob)
		if n, err := e.srv.followOnce(t.Context()); err != nil || n != 3 {
			t.Fatalf("followOnce: %d events, %v; want 3", n, err)
		}
		if st := e.state(t, owner, group); st.GetRotationRequired() {
			t.Fatalf("a stale publication required a rotation: %v", st)
		}
		if err := e.publishCard(bob); err != nil {
			t.Fatal(err)
		}
		if n, err := e.srv.followOnce(t.Context()); err != nil || n != 1 {
			t.Fatalf("followOnce: %d events, %v; want 1", n, err)
		}
		if st := e.state(t, owner, group); !slices.Equal(st.GetRotationReasons(), []groupv1.RotationReason{groupv1.RotationReason_ROTATION_REASON_CARD_CHANGED}) {
			t.Errorf("after bob's next rotation: %v", st)
		}
	})
	t.Run("sender card", func(t *testing.T) {
		e := newEnv(t, envOptions{noLoops: true}) // no card feed: the message itself tells
		owner, bob, group := e.twoMemberGroup(t)
		if err := e.publishCard(bob); err != nil {
			t.Fatal(err)
		}
		_, err := e.authorize(bob, group, 1)
		wantCode(t, err, codes.FailedPrecondition, "epoch required")
		if d := detail[*groupv1.EpochRequired](err); d == nil || !d.GetRotationRequired() || !slices.Equal(d.GetRotationReasons(), []groupv1.RotationReason{groupv1.RotationReason_ROTATION_REASON_CARD_CHANGED}) {
			t.Errorf("%v", d)
		}
		if st := e.state(t, owner, group); !st.GetRotationRequired() {
			t.Errorf("the mark was not kept: %v", st)
		}
		_, err = e.authorize(owner, group, 1)
		wantCode(t, err, codes.FailedPrecondition, "epoch required")
		e.commit(t, group, bob, owner, bob)
		if _, err := e.authorize(bob, group, 2); err != nil {
			t.Fatal(err)
		}
	})
}

// waitRotation waits until the card follower marked group for a card change.
func waitRotation(t *testing.T, e *env, u *user, group string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := e.state(t, u, group)
		if st.GetRotationRequired() && slices.Contains(st.GetRotationReasons(), groupv1.RotationReason_ROTATION_REASON_CARD_CHANGED) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rotation required 10 s after a card change: %v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
