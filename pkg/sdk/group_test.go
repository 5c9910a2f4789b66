package sdk_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// groupWorld is a node, an app, one group identity and registered users.
type groupWorld struct {
	n     *nodetest.Node
	app   *nodetest.App
	group string
	users map[string]*device
}

// newGroupWorld starts a node and registers one user per name, alternating the suites
// so that every epoch wraps keys to both. Keystores have no passphrase, to keep the
// setup quick (Argon2id is not what these tests are about).
func newGroupWorld(t *testing.T, names ...string) *groupWorld {
	t.Helper()
	n, app := startNode(t)
	w := &groupWorld{n: n, app: app, group: app.Group(t, "the-group"), users: map[string]*device{}}
	for i, name := range names {
		suite := e2ee.SuiteX25519
		if i%2 == 1 {
			suite = e2ee.SuiteHybrid
		}
		d := newQuickDevice(t, n, app, name, suite)
		mustRegister(t, d)
		w.users[name] = d
	}
	return w
}

// createGroup creates w's group, owned by owner, with members, failing t on an error.
func (w *groupWorld) createGroup(t *testing.T, owner *device, members ...*device) *sdk.Group {
	t.Helper()
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m.identity
	}
	g, _, err := owner.CreateGroup(context.Background(), w.group, sdk.CreateGroupOptions{Members: ids})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// mustSend sends text to g, failing t on an error.
func mustSend(t *testing.T, g *sdk.Group, text string) {
	t.Helper()
	if _, err := g.Send(context.Background(), []byte(text)); err != nil {
		t.Fatal(err)
	}
}

// newQuickDevice is newDevice with an unencrypted keystore, in a folder of its own,
// dialling with opts.
func newQuickDevice(t testing.TB, n *nodetest.Node, app *nodetest.App, uid string, suite e2ee.Suite, opts ...grpc.DialOption) *device {
	t.Helper()
	id := app.User(t, uid)
	path := filepath.Join(t.TempDir(), "keystore")
	c, err := sdk.New(context.Background(), sdk.Config{Addr: n.GRPC, Token: app.TokenFunc(id), KeystorePath: path, NoPassphrase: true, Suite: suite, DialOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &device{Client: c, identity: id, keystore: path}
}

// readGroup returns every message of the group d can read, decrypted, oldest first,
// with the error of each one it cannot.
func readGroup(t *testing.T, d *device, group string) (texts []string, errs []error) {
	t.Helper()
	ctx := context.Background()
	zero := uint64(0)
	page, err := d.History(ctx, &messagingv1.HistoryRequest{ConversationId: group, AfterSequence: &zero, PageSize: 500})
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	for _, m := range page.GetMessages() {
		text, err := d.OpenMessage(ctx, m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		texts = append(texts, string(text))
	}
	return texts, errs
}

// wantReads fails the test unless d, named who, reads exactly want from the group
// (readGroup), every message opened.
func wantReads(t *testing.T, who string, d *device, group string, want ...string) {
	t.Helper()
	got, errs := readGroup(t, d, group)
	if len(errs) > 0 {
		t.Errorf("%s cannot read some messages: %v", who, errs)
	}
	if len(got) != len(want) {
		t.Fatalf("%s reads %q; want %q", who, got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s reads %q; want %q", who, got, want)
		}
	}
}

// wantEpoch checks that the group's latest message, as its sender signed it and d reads
// it in the history, is at epoch want; what names the message in the failure.
func wantEpoch(t *testing.T, d *device, group string, want uint64, what string) {
	t.Helper()
	page, err := d.History(context.Background(), &messagingv1.HistoryRequest{ConversationId: group, PageSize: 1})
	if err != nil || len(page.GetMessages()) == 0 {
		t.Fatalf("history: %v", err)
	}
	info, err := e2ee.InspectGroupMessage(page.GetMessages()[0].GetEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	if info.Epoch != want {
		t.Fatalf("%s is at epoch %d; want %d", what, info.Epoch, want)
	}
}

func TestGroupJoinWithApproval(t *testing.T) {
	t.Parallel()
	w := newGroupWorld(t, "alice", "bob")
	ctx := context.Background()
	alice, bob := w.users["alice"], w.users["bob"]
	g, info, err := alice.CreateGroup(ctx, w.group, sdk.CreateGroupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetOwner() != alice.identity || info.GetEncryptionMode() != groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED || info.GetEpoch() != 0 {
		t.Fatalf("created %v", info)
	}
	// The first send commits epoch 1.
	mustSend(t, g, "before bob")
	wantEpoch(t, alice, w.group, 1, "first message")

	req, err := bob.RequestJoin(ctx, w.group)
	if err != nil || req.GetIdentity() != bob.identity {
		t.Fatalf("RequestJoin = %v, %v", req, err)
	}
	reqs, err := g.JoinRequests(ctx)
	if err != nil || len(reqs) != 1 || reqs[0].GetIdentity() != bob.identity {
		t.Fatalf("JoinRequests = %v, %v", reqs, err)
	}
	if _, err := bob.Group(w.group).Send(ctx, []byte("not yet")); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a requester sends: %v; want PermissionDenied", err)
	}
	if err := g.ApproveJoin(ctx, bob.identity); err != nil {
		t.Fatal(err)
	}

	// Bob's first send rotates: the group needs a key bob has.
	bg, _, err := bob.LoadGroup(ctx, w.group)
	if err != nil {
		t.Fatal(err)
	}
	mustSend(t, bg, "hello, I'm bob")
	wantEpoch(t, bob, w.group, 2, "bob's message")
	mustSend(t, g, "welcome bob")
	wantReads(t, "alice", alice, w.group, "before bob", "hello, I'm bob", "welcome bob")
	// History is SINCE_JOIN: bob sees nothing from before he joined.
	wantReads(t, "bob", bob, w.group, "hello, I'm bob", "welcome bob")
}

func TestGroupInvitationWithAcceptance(t *testing.T) {
	t.Parallel()
	w := newGroupWorld(t, "alice", "carol")
	ctx := context.Background()
	alice, carol := w.users["alice"], w.users["carol"]
	g, _, err := alice.CreateGroup(ctx, w.group, sdk.CreateGroupOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inv, err := g.Invite(ctx, carol.identity, time.Hour)
	if err != nil || inv.GetInvitee() != carol.identity {
		t.Fatalf("Invite = %v, %v", inv, err)
	}
	invs, err := carol.Invitations(ctx)
	if err != nil || len(invs) != 1 || invs[0].GetGroupId() != w.group || invs[0].GetInviter() != alice.identity {
		t.Fatalf("Invitations = %v, %v", invs, err)
	}
	cg, err := carol.AcceptInvitation(ctx, w.group)
	if err != nil {
		t.Fatal(err)
	}
	if invs, _ := carol.Invitations(ctx); len(invs) != 0 {
		t.Errorf("an accepted invitation is still pending: %v", invs)
	}

	// Carol listens live while alice writes; the SDK opens the group message.
	got := make(chan string, 1)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	subscribed := make(chan struct{})
	var once sync.Once
	go carol.Subscribe(sctx, sdk.SubscribeOptions{}, func(item *messagingv1.SubscribeResponse) error {
		if item.GetHeartbeat() != nil {
			once.Do(func() { close(subscribed) })
		}
		if m := item.GetMessage(); m != nil {
			text, err := carol.OpenMessage(sctx, m)
			if err != nil {
				got <- "error: " + err.Error()
			} else {
				got <- string(text)
			}
		}
		return nil
	})
	<-subscribed
	mustSend(t, g, "hi carol")
	select {
	case text := <-got:
		if text != "hi carol" {
			t.Fatalf("carol got %q", text)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("carol got nothing")
	}
	mustSend(t, cg, "thanks")
	wantReads(t, "alice", alice, w.group, "hi carol", "thanks")

	// A declined invitation leaves no membership, and nothing to accept: the invitee
	// may no longer read the chain it would sign its acceptance after.
	dave := newQuickDevice(t, w.n, w.app, "dave", e2ee.SuiteX25519)
	mustRegister(t, dave)
	if _, err := g.Invite(ctx, dave.identity, 0); err != nil {
		t.Fatal(err)
	}
	if err := dave.DeclineInvitation(ctx, w.group); err != nil {
		t.Fatal(err)
	}
	if _, err := dave.AcceptInvitation(ctx, w.group); !errors.Is(err, e2ee.ErrNotMember) || status.Code(err) != codes.PermissionDenied {
		t.Errorf("accepting a declined invitation: %v; want ErrNotMember (PermissionDenied)", err)
	}
}

func TestGroupKickEnforcesRotation(t *testing.T) {
	t.Parallel()
	w := newGroupWorld(t, "alice", "bob", "carol")
	ctx := context.Background()
	alice, bob, carol := w.users["alice"], w.users["bob"], w.users["carol"]
	g := w.createGroup(t, alice, bob, carol)
	mustSend(t, g, "all three")
	wantReads(t, "carol", carol, w.group, "all three")

	if err := g.Remove(ctx, carol.identity); err != nil {
		t.Fatal(err)
	}
	// The next message cannot go out at epoch 1: the SDK rotates to epoch 2, whose key
	// carol never gets.
	mustSend(t, g, "carol is gone")
	wantEpoch(t, alice, w.group, 2, "the message after the kick")
	wantReads(t, "bob", bob, w.group, "all three", "carol is gone")

	// Carol can read neither the conversation nor, given the bytes, the message.
	if _, err := carol.History(ctx, &messagingv1.HistoryRequest{ConversationId: w.group}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a removed member reads the history: %v", err)
	}
	page, err := bob.History(ctx, &messagingv1.HistoryRequest{ConversationId: w.group, PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	latest := page.GetMessages()[0]
	if _, err := carol.Group(w.group).Decrypt(ctx, latest.GetEnvelope(), alice.identity); !errors.Is(err, e2ee.ErrNotMember) {
		t.Errorf("the removed member decrypts a later message: %v; want ErrNotMember", err)
	}
	if _, err := carol.Group(w.group).Send(ctx, []byte("still here?")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the removed member sends: %v; want PermissionDenied", err)
	}

	// Banning works the same way, and a banned identity cannot ask to come back.
	removed, err := g.Ban(ctx, bob.identity)
	if err != nil || !removed {
		t.Fatalf("Ban = %v, %v", removed, err)
	}
	if _, err := bob.RequestJoin(ctx, w.group); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a banned identity asks to join: %v; want PermissionDenied", err)
	}
	mustSend(t, g, "alone")
	wantEpoch(t, alice, w.group, 3, "the message after the ban")
	if err := g.Unban(ctx, bob.identity); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.RequestJoin(ctx, w.group); err != nil {
		t.Errorf("an unbanned identity asks to join: %v", err)
	}
}

func TestGroupEncryptionSwitchedOn(t *testing.T) {
	t.Parallel()
	w := newGroupWorld(t, "alice", "bob")
	ctx := context.Background()
	alice, bob := w.users["alice"], w.users["bob"]
	g, _, err := alice.CreateGroup(ctx, w.group, sdk.CreateGroupOptions{Members: []string{bob.identity}, EncryptionMode: groupv1.EncryptionMode_ENCRYPTION_MODE_OFF})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.SendPlaintext(ctx, []byte("in the clear")); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Send(ctx, []byte("secret")); !errors.Is(err, sdk.ErrEncryptionOff) {
		t.Fatalf("an encrypted send with encryption off: %v; want ErrEncryptionOff", err)
	}
	if err := bob.Group(w.group).SetEncryptionMode(ctx, groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a member switches encryption on: %v; want PermissionDenied", err)
	}
	if err := g.SetEncryptionMode(ctx, groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED); err != nil {
		t.Fatal(err)
	}
	if _, err := g.SendPlaintext(ctx, []byte("clear again?")); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("plaintext in a REQUIRED group: %v; want FailedPrecondition", err)
	}
	mustSend(t, bob.Group(w.group), "now encrypted")
	wantEpoch(t, bob, w.group, 1, "the first encrypted message")
	wantReads(t, "alice", alice, w.group, "in the clear", "now encrypted")
}

func TestGroupOwnerLeaves(t *testing.T) {
	t.Parallel()
	w := newGroupWorld(t, "alice", "bob", "carol")
	ctx := context.Background()
	alice, bob, carol := w.users["alice"], w.users["bob"], w.users["carol"]
	g := w.createGroup(t, alice, bob, carol)
	if err := g.SetRole(ctx, carol.identity, groupv1.GroupRole_GROUP_ROLE_ADMIN); err != nil {
		t.Fatal(err)
	}
	mustSend(t, g, "goodbye")
	left, err := g.Leave(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The longest-serving admin takes over.
	if left.GetNewOwner() != carol.identity || left.GetGroupDeleted() {
		t.Fatalf("Leave = %v; want carol, the admin, as owner", left)
	}
	cg, info, err := carol.LoadGroup(ctx, w.group)
	if err != nil || info.GetOwner() != carol.identity || info.GetMemberCount() != 2 {
		t.Fatalf("after the owner left: %v, %v", info, err)
	}
	mustSend(t, cg, "carol runs the group")
	wantEpoch(t, carol, w.group, 2, "the message after the owner left")
	// The new owner can do what only an owner may.
	if err := cg.SetHistoryVisibility(ctx, groupv1.HistoryVisibility_HISTORY_VISIBILITY_SHARED); err != nil {
		t.Errorf("the new owner sets the history visibility: %v", err)
	}
	// Bob reads both epochs, the departed owner's message included.
	wantReads(t, "bob", bob, w.group, "goodbye", "carol runs the group")
	if _, err := alice.Group(w.group).Send(ctx, []byte("let me back")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the departed owner sends: %v; want PermissionDenied", err)
	}
	// The last member's departure deletes the group.
	if _, err := bob.Group(w.group).Leave(ctx); err != nil {
		t.Fatal(err)
	}
	last, err := cg.Leave(ctx)
	if err != nil || !last.GetGroupDeleted() {
		t.Errorf("the last member leaves: %v, %v; want the group deleted", last, err)
	}
}

// TestGroupRotationRace: two members send at once after a membership change. Both
// try to commit the next epoch; one wins, the other gets EpochConflict, loads the
// winner's key and resends. Both messages are readable, and there is one new epoch.
func TestGroupRotationRace(t *testing.T) {
	t.Parallel()
	w := newGroupWorld(t, "alice", "bob", "carol", "dave")
	ctx := context.Background()
	alice, bob, carol, dave := w.users["alice"], w.users["bob"], w.users["carol"], w.users["dave"]
	g := w.createGroup(t, alice, bob, carol)
	mustSend(t, g, "epoch one")
	// Bob and carol hold epoch 1's key.
	for _, d := range []*device{bob, carol} {
		wantReads(t, d.identity, d, w.group, "epoch one")
	}
	if _, err := g.Add(ctx, dave.identity); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, d := range []*device{bob, carol} {
		wg.Go(func() { _, errs[i] = d.Group(w.group).Send(ctx, []byte("from "+d.identity)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	texts, rerrs := readGroup(t, dave, w.group)
	if len(rerrs) > 0 || len(texts) != 2 {
		t.Fatalf("dave reads %q, %v; want both racing messages", texts, rerrs)
	}
	st, err := groupv1.NewGroupServiceClient(alice.Conn()).GetEpochState(ctx, &groupv1.GetEpochStateRequest{GroupId: w.group})
	if err != nil || st.GetEpoch() != 2 {
		t.Errorf("epoch after the race = %v, %v; want 2", st.GetEpoch(), err)
	}
}

// TestGroupRotationEvent: a member's card rotation reaches the other members'
// streams as a ROTATION_REQUIRED event (which the SDK notes, so that the next send
// commits without waiting to be refused), and the new epoch is wrapped to the new
// card: the rotated member reads it with its new key.
func TestGroupRotationEvent(t *testing.T) {
	t.Parallel()
	w := newGroupWorld(t, "alice", "bob")
	ctx := context.Background()
	alice, bob := w.users["alice"], w.users["bob"]
	g := w.createGroup(t, alice, bob)
	mustSend(t, g, "one")
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rotation := make(chan *groupv1.GroupEvent, 4)
	subscribed := make(chan struct{})
	var once sync.Once
	go alice.Subscribe(sctx, sdk.SubscribeOptions{}, func(item *messagingv1.SubscribeResponse) error {
		if item.GetHeartbeat() != nil {
			once.Do(func() { close(subscribed) })
		}
		if ev, ok := sdk.GroupEvent(item); ok && ev.GetKind() == groupv1.GroupEventKind_GROUP_EVENT_KIND_ROTATION_REQUIRED {
			rotation <- ev
		}
		return nil
	})
	<-subscribed
	// Bob rotates his keys: the group needs a new epoch wrapped to his new card.
	if _, err := bob.RotateKeys(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-rotation:
		if ev.GetGroupId() != w.group {
			t.Fatalf("rotation event for %s", ev.GetGroupId())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no ROTATION_REQUIRED event after a member's card rotation")
	}
	mustSend(t, g, "two")
	wantEpoch(t, alice, w.group, 2, "the message after bob's card rotation")
	wantReads(t, "bob", bob, w.group, "one", "two")
}

// TestGroupEpochConflict: bob's commit loses the race to carol's, deterministically
// (carol commits while bob's CommitEpoch is on its way). Bob gets ABORTED with
// EpochConflict, loads carol's epoch key, verifies it and resends at her epoch.
func TestGroupEpochConflict(t *testing.T) {
	t.Parallel()
	w := newGroupWorld(t, "alice", "carol", "dave")
	ctx := context.Background()
	alice, carol, dave := w.users["alice"], w.users["carol"], w.users["dave"]
	var commits []codes.Code
	var mu sync.Mutex
	race := func(callCtx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method != groupv1.GroupService_CommitEpoch_FullMethodName {
			return invoker(callCtx, method, req, reply, cc, opts...)
		}
		mu.Lock()
		first := len(commits) == 0
		mu.Unlock()
		if first {
			// ctx, not callCtx, which carries bob's credentials.
			if err := carol.Group(w.group).Rotate(ctx); err != nil {
				t.Errorf("carol's rotation: %v", err)
			}
		}
		err := invoker(callCtx, method, req, reply, cc, opts...)
		mu.Lock()
		commits = append(commits, status.Code(err))
		mu.Unlock()
		return err
	}
	bob := newInterceptedDevice(t, w, "bob", race)
	g := w.createGroup(t, alice, bob, carol)
	mustSend(t, g, "epoch one")
	if _, err := g.Add(ctx, dave.identity); err != nil {
		t.Fatal(err)
	}
	mustSend(t, bob.Group(w.group), "bob after the race")
	mu.Lock()
	got := append([]codes.Code(nil), commits...)
	mu.Unlock()
	if len(got) != 1 || got[0] != codes.Aborted {
		t.Fatalf("bob's commits ended with %v; want one, ABORTED by carol's", got)
	}
	wantEpoch(t, bob, w.group, 2, "bob's message, resent at carol's epoch,")
	wantReads(t, "dave", dave, w.group, "bob after the race")
}

// newInterceptedDevice registers uid with a client whose unary calls go through
// interceptor.
func newInterceptedDevice(t *testing.T, w *groupWorld, uid string, interceptor grpc.UnaryClientInterceptor) *device {
	t.Helper()
	d := newQuickDevice(t, w.n, w.app, uid, e2ee.SuiteHybrid, grpc.WithChainUnaryInterceptor(interceptor))
	mustRegister(t, d)
	return d
}

// TestGroupCommitMismatch: a member joins while bob's commit is on its way, so the
// commit no longer covers every member. The service refuses it with CommitMismatch;
// bob refetches the members and their cards, commits again, and the newcomer can read
// bob's message.
func TestGroupCommitMismatch(t *testing.T) {
	t.Parallel()
	w := newGroupWorld(t, "alice", "eve")
	ctx := context.Background()
	alice, eve := w.users["alice"], w.users["eve"]
	var commits []codes.Code
	var mu sync.Mutex
	bob := newInterceptedDevice(t, w, "bob", func(callCtx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method != groupv1.GroupService_CommitEpoch_FullMethodName {
			return invoker(callCtx, method, req, reply, cc, opts...)
		}
		mu.Lock()
		first := len(commits) == 0
		mu.Unlock()
		if first {
			if _, err := alice.Group(w.group).Add(ctx, eve.identity); err != nil {
				t.Errorf("adding eve: %v", err)
			}
		}
		err := invoker(callCtx, method, req, reply, cc, opts...)
		mu.Lock()
		commits = append(commits, status.Code(err))
		mu.Unlock()
		return err
	})
	if _, _, err := alice.CreateGroup(ctx, w.group, sdk.CreateGroupOptions{Members: []string{bob.identity}}); err != nil {
		t.Fatal(err)
	}
	mustSend(t, bob.Group(w.group), "hello, whoever is here")
	mu.Lock()
	got := append([]codes.Code(nil), commits...)
	mu.Unlock()
	if len(got) != 2 || got[0] != codes.FailedPrecondition || got[1] != codes.OK {
		t.Fatalf("bob's commits ended with %v; want FAILED_PRECONDITION (CommitMismatch), then OK", got)
	}
	wantReads(t, "eve", eve, w.group, "hello, whoever is here")
}

// TestGroupForgedCommitRefused: the service (here an interceptor standing in for a
// malicious one) hands bob an epoch key that a non-member's card wrapped and signed,
// claiming that card's owner committed the epoch. Bob's client refuses it with
// ErrNotMember, so it cannot be made to read under a key the server chose.
func TestGroupForgedCommitRefused(t *testing.T) {
	t.Parallel()
	w := newGroupWorld(t, "alice")
	ctx := context.Background()
	alice := w.users["alice"]
	// Mallory's card, published with mallory's token, whose key the "server" holds.
	mallory := w.app.User(t, "mallory")
	malloryKeys, err := e2ee.GenerateKeyPair(e2ee.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	content, sig, err := e2ee.NewCard(malloryKeys, mallory, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	mctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+w.app.Token(t, mallory))
	if _, err := cardv1.NewCardServiceClient(w.n.Conn()).PublishCard(mctx, &cardv1.PublishCardRequest{Content: content, SelfSignature: sig}); err != nil {
		t.Fatal(err)
	}
	var bobCard *e2ee.Card
	var forged bool
	bob := newInterceptedDevice(t, w, "bob", func(callCtx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(callCtx, method, req, reply, cc, opts...)
		if method != groupv1.GroupService_GetEpochKeys_FullMethodName || err != nil {
			return err
		}
		// The forgery names the real commit's membership head: only the signer is wrong.
		real, ferr := e2ee.ParseEpochCommit(reply.(*groupv1.GetEpochKeysResponse).GetKeys()[0].GetCommit().GetCommit())
		if ferr != nil {
			t.Error(ferr)
			return err
		}
		ep, ferr := e2ee.NewEpoch(malloryKeys, e2ee.CardID(content), w.group, 1, nil, real.Membership, []*e2ee.Card{bobCard}, time.Now())
		if ferr != nil {
			t.Error(ferr)
			return err
		}
		reply.(*groupv1.GetEpochKeysResponse).Keys = []*groupv1.EpochKey{{Epoch: 1, WrappedKey: ep.WrappedKeys[0], Commit: &groupv1.EpochCommit{Epoch: 1, Commit: ep.Commit, CommittedBy: mallory}}}
		forged = true
		return err
	})
	found, err := bob.FindCards(ctx, bob.identity)
	if err != nil {
		t.Fatal(err)
	}
	bobCard = found[bob.identity].Card
	g := w.createGroup(t, alice, bob)
	mustSend(t, g, "for bob")
	_, errs := readGroup(t, bob, w.group)
	if !forged || len(errs) != 1 || !errors.Is(errs[0], e2ee.ErrNotMember) {
		t.Fatalf("bob opens alice's message with a forged epoch key (forged: %v): %v; want ErrNotMember", forged, errs)
	}
}

// TestGroupSharedHistory: in a group whose history is SHARED, a newcomer cannot read
// the epochs before it joined until a member re-shares their keys; then it reads them,
// each checked against its epoch's signed commit. In a SINCE_JOIN group sharing is
// refused.
func TestGroupSharedHistory(t *testing.T) {
	t.Parallel()
	w := newGroupWorld(t, "alice", "bob")
	ctx := context.Background()
	alice, bob := w.users["alice"], w.users["bob"]
	g, _, err := alice.CreateGroup(ctx, w.group, sdk.CreateGroupOptions{HistoryVisibility: groupv1.HistoryVisibility_HISTORY_VISIBILITY_SHARED})
	if err != nil {
		t.Fatal(err)
	}
	mustSend(t, g, "old news")
	if _, err := g.Add(ctx, bob.identity); err != nil {
		t.Fatal(err)
	}
	mustSend(t, g, "news")
	texts, errs := readGroup(t, bob, w.group)
	if len(texts) != 1 || texts[0] != "news" || len(errs) != 1 || !errors.Is(errs[0], e2ee.ErrWrongEpoch) {
		t.Fatalf("before the share bob reads %q with %v; want only the new message, and ErrWrongEpoch for the old", texts, errs)
	}
	n, err := g.ShareHistory(ctx, bob.identity)
	if err != nil || n != 1 {
		t.Fatalf("ShareHistory = %d, %v; want epoch 1 shared", n, err)
	}
	wantReads(t, "bob", bob, w.group, "old news", "news")

	if err := g.SetHistoryVisibility(ctx, groupv1.HistoryVisibility_HISTORY_VISIBILITY_SINCE_JOIN); err != nil {
		t.Fatal(err)
	}
	if _, err := g.ShareHistory(ctx, bob.identity); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("sharing in a SINCE_JOIN group: %v; want FailedPrecondition", err)
	}
}
