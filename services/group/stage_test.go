package group

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// stagedCommit commits the next epoch of group by signer for members, staging the keys
// in chunks of chunk and sending the last chunk with the commit.
func (e *env) stagedCommit(t testing.TB, group string, signer *user, members []*user, chunk int) (*groupv1.CommitEpochResponse, error) {
	t.Helper()
	st := e.state(t, signer, group)
	wks := make([]*envelopev1.WrappedEpochKey, len(members))
	keys := make([]*groupv1.MemberKey, len(members))
	for i, m := range members {
		wks[i] = wrapped(m)
		keys[i] = &groupv1.MemberKey{Identity: m.identity, WrappedKey: wks[i]}
	}
	c := e.signCommit(t, group, st.GetEpoch(), st.GetCommit().GetCommitHash(), signer, wks)
	upload := ""
	last := len(keys) - (len(keys)-1)%chunk - 1
	for start := 0; start < last; start += chunk {
		r, err := e.client.StageEpochKeys(signer.ctx(), &groupv1.StageEpochKeysRequest{GroupId: group, FromEpoch: st.GetEpoch(), UploadId: upload, Keys: keys[start:min(start+chunk, last)]})
		if err != nil {
			t.Fatalf("stage %d: %v", start, err)
		}
		if int(r.GetStagedCount()) != min(start+chunk, last) {
			t.Fatalf("staged %d; want %d", r.GetStagedCount(), min(start+chunk, last))
		}
		upload = r.GetUploadId()
	}
	return e.client.CommitEpoch(signer.ctx(), &groupv1.CommitEpochRequest{GroupId: group, FromEpoch: st.GetEpoch(), Commit: c, Keys: keys[last:], UploadId: upload})
}

// TestStagedCommit: a commit too large for one request goes in chunks; retrying a chunk
// is harmless; an upload is its owner's, of one epoch, and consumed by the commit.
func TestStagedCommit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true, quiet: true})
	a := e.newApp(t)
	uids := make([]string, 1201)
	for i := range uids {
		uids[i] = fmt.Sprintf("user-%04d", i)
	}
	us := e.newUsers(t, a, true, uids...)
	owner, members := us[0], us[:1200]
	outsider := us[1200]
	group := e.groupID(t, a, "big")
	e.create(t, owner, group, members[1:1000]...)
	if _, err := e.client.AddMembers(owner.ctx(), &groupv1.AddMembersRequest{GroupId: group, Identities: identities(members[1000:]...)}); err != nil {
		t.Fatal(err)
	}
	// Too many keys for one request.
	c, keys := e.commitFor(t, group, 0, nil, owner, members...)
	_, err := e.client.CommitEpoch(owner.ctx(), &groupv1.CommitEpochRequest{GroupId: group, Commit: c, Keys: keys})
	wantCode(t, err, codes.InvalidArgument, "StageEpochKeys")

	// Upload rules.
	r1, err := e.client.StageEpochKeys(owner.ctx(), &groupv1.StageEpochKeysRequest{GroupId: group, Keys: keys[:500]})
	if err != nil || r1.GetStagedCount() != 500 {
		t.Fatalf("stage: %v, %v", r1, err)
	}
	r2, err := e.client.StageEpochKeys(owner.ctx(), &groupv1.StageEpochKeysRequest{GroupId: group, UploadId: r1.GetUploadId(), Keys: keys[250:750]})
	if err != nil || r2.GetStagedCount() != 750 || r2.GetUploadId() != r1.GetUploadId() {
		t.Fatalf("overlapping chunk: %v, %v; want 750 distinct", r2, err)
	}
	_, err = e.client.StageEpochKeys(members[1].ctx(), &groupv1.StageEpochKeysRequest{GroupId: group, UploadId: r1.GetUploadId(), Keys: keys[750:760]})
	wantCode(t, err, codes.NotFound, "upload")
	_, err = e.client.StageEpochKeys(outsider.ctx(), &groupv1.StageEpochKeysRequest{GroupId: group, Keys: keys[750:760]})
	wantCode(t, err, codes.PermissionDenied, "not a member")
	_, err = e.client.StageEpochKeys(owner.ctx(), &groupv1.StageEpochKeysRequest{GroupId: group, FromEpoch: 3, UploadId: r1.GetUploadId(), Keys: keys[750:760]})
	wantCode(t, err, codes.Aborted, "another commit won")
	// A commit naming the upload with a key staged twice is refused, and consumes it.
	_, err = e.client.CommitEpoch(owner.ctx(), &groupv1.CommitEpochRequest{GroupId: group, Commit: c, Keys: keys[0:1], UploadId: r1.GetUploadId()})
	wantCode(t, err, codes.InvalidArgument, "in the upload too")
	_, err = e.client.StageEpochKeys(owner.ctx(), &groupv1.StageEpochKeysRequest{GroupId: group, UploadId: r1.GetUploadId(), Keys: keys[750:760]})
	wantCode(t, err, codes.NotFound, "upload")

	// An upload expires 10 minutes after its last chunk; the sweeper drops it.
	r3, err := e.client.StageEpochKeys(owner.ctx(), &groupv1.StageEpochKeysRequest{GroupId: group, Keys: keys[:10]})
	if err != nil || !r3.GetExpiresAt().AsTime().Equal(e.clock.Now().Add(DefaultUploadTTL)) {
		t.Fatalf("stage: %v, %v", r3, err)
	}
	e.clock.Add(DefaultUploadTTL)
	_, err = e.client.StageEpochKeys(owner.ctx(), &groupv1.StageEpochKeysRequest{GroupId: group, UploadId: r3.GetUploadId(), Keys: keys[10:20]})
	wantCode(t, err, codes.NotFound, "upload")
	if err := e.srv.sweep(e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	for k := range e.snapshot(t) {
		if hasPrefix(k, "uploads/") || hasPrefix(k, "upload_keys/") {
			t.Fatalf("left after the sweep: %q", k)
		}
	}

	resp, err := e.stagedCommit(t, group, owner, members, 500)
	if err != nil || resp.GetCommit().GetEpoch() != 1 {
		t.Fatalf("staged commit: %v, %v", resp, err)
	}
	if ks, err := e.keyEpochs(members[1199], group); err != nil || !slices.Equal(ks, []uint64{1}) {
		t.Errorf("the last member's keys: %v, %v", ks, err)
	}
	// Nothing of the uploads is left.
	for k := range e.snapshot(t) {
		if hasPrefix(k, "uploads/") || hasPrefix(k, "upload_keys/") {
			t.Fatalf("left after the commit: %q", k)
		}
	}
	// A staged commit that misses a member is refused like an inline one.
	_, err = e.stagedCommit(t, group, members[5], members[:1199], 500)
	wantCode(t, err, codes.FailedPrecondition, "do not cover")
}

// TestShareEpochKeys: under SHARED history, members re-share older keys with a
// newcomer; under SINCE_JOIN they cannot.
func TestShareEpochKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{noLoops: true})
	_, group, us := e.newTeam(t, 2, "owner", "bob", "carol", "dave")
	owner, bob, carol, dave := us[0], us[1], us[2], us[3]
	e.commit(t, group, owner, owner, bob)
	if _, err := e.client.AddMembers(owner.ctx(), &groupv1.AddMembersRequest{GroupId: group, Identities: identities(carol)}); err != nil {
		t.Fatal(err)
	}
	e.commit(t, group, owner, owner, bob, carol)
	share := func(from *user, to *user, epoch uint64) error {
		_, err := e.client.ShareEpochKeys(from.ctx(), &groupv1.ShareEpochKeysRequest{GroupId: group, Shares: []*groupv1.EpochShare{{Epoch: epoch, Recipient: to.identity, WrappedKey: wrapped(to)}}})
		return err
	}
	wantCode(t, share(bob, carol, 1), codes.FailedPrecondition, "SINCE_JOIN")
	if _, err := e.client.SetHistoryVisibility(owner.ctx(), &groupv1.SetHistoryVisibilityRequest{GroupId: group, HistoryVisibility: groupv1.HistoryVisibility_HISTORY_VISIBILITY_SHARED}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, share(bob, carol, 2), codes.FailedPrecondition, "not older")
	wantCode(t, share(bob, dave, 1), codes.FailedPrecondition, "not a member")
	wantCode(t, share(carol, owner, 1), codes.FailedPrecondition, "not older")
	wantCode(t, share(dave, carol, 1), codes.PermissionDenied, "not a member")
	stale := *carol
	stale.cardID = owner.cardID
	_, err := e.client.ShareEpochKeys(bob.ctx(), &groupv1.ShareEpochKeysRequest{GroupId: group, Shares: []*groupv1.EpochShare{{Epoch: 1, Recipient: carol.identity, WrappedKey: wrapped(&stale)}}})
	wantCode(t, err, codes.FailedPrecondition, "active card")

	if err := share(bob, carol, 1); err != nil {
		t.Fatal(err)
	}
	keys, err := e.client.GetEpochKeys(carol.ctx(), &groupv1.GetEpochKeysRequest{GroupId: group})
	if err != nil || len(keys.GetKeys()) != 2 || keys.GetKeys()[0].GetEpoch() != 1 || keys.GetKeys()[0].GetSharedBy() != bob.identity || keys.GetKeys()[1].GetSharedBy() != "" || keys.GetKeys()[0].GetCommit().GetEpoch() != 1 {
		t.Fatalf("carol's keys: %v, %v", keys, err)
	}
	// A later newcomer can get epoch 1 from carol, who holds it by a share.
	if _, err := e.client.AddMembers(owner.ctx(), &groupv1.AddMembersRequest{GroupId: group, Identities: identities(dave)}); err != nil {
		t.Fatal(err)
	}
	if err := share(carol, dave, 1); err != nil {
		t.Fatal(err)
	}
	// Switching back to SINCE_JOIN keeps what was shared.
	if _, err := e.client.SetHistoryVisibility(owner.ctx(), &groupv1.SetHistoryVisibilityRequest{GroupId: group, HistoryVisibility: groupv1.HistoryVisibility_HISTORY_VISIBILITY_SINCE_JOIN}); err != nil {
		t.Fatal(err)
	}
	if ks, err := e.keyEpochs(dave, group); err != nil || !slices.Equal(ks, []uint64{1}) {
		t.Errorf("dave's keys: %v, %v", ks, err)
	}
	wantCode(t, share(carol, dave, 2), codes.FailedPrecondition, "SINCE_JOIN")
}
