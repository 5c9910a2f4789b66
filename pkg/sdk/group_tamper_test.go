package sdk_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/keystore"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// The malicious-server tests of signed membership (issue 13, item 6). A tamper stands
// between one SDK client and the real services of a nodetest node: it passes every
// call through, then rewrites the replies of the methods it was told to, as a
// malicious group service would answer. Each test fails when the SDK check it names is
// taken out.

// tamper rewrites replies of chosen methods, and records every request it passes.
type tamper struct {
	mu       sync.Mutex
	rewrite  map[string]func(req, reply any)
	serve    map[string]func(req, reply any) bool
	requests map[string][]proto.Message
}

func newTamper() *tamper {
	return &tamper{rewrite: map[string]func(req, reply any){}, serve: map[string]func(req, reply any) bool{}, requests: map[string][]proto.Message{}}
}

// answer makes the tamper answer calls of method itself when f fills the reply (and
// returns true), without asking the server: a card the server never stored, say.
func (tp *tamper) answer(method string, f func(req, reply any) bool) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.serve[method] = f
}

// on makes the tamper rewrite the replies of method with f from now on.
func (tp *tamper) on(method string, f func(req, reply any)) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.rewrite[method] = f
}

// sent returns the requests of method the client sent so far.
func (tp *tamper) sent(method string) []proto.Message {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return slices.Clone(tp.requests[method])
}

func (tp *tamper) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	tp.mu.Lock()
	tp.requests[method] = append(tp.requests[method], proto.Clone(req.(proto.Message)))
	f, own := tp.rewrite[method], tp.serve[method]
	tp.mu.Unlock()
	if own != nil && own(req, reply) {
		return nil
	}
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err == nil && f != nil {
		f(req, reply)
	}
	return err
}

// outsider is an identity of the app with a card whose keys the test (standing in for
// the malicious server, or its accomplice) holds; it is never made a member.
type outsider struct {
	identity string
	keys     *e2ee.KeyPair
	card     *e2ee.Card
}

func newOutsider(t *testing.T, w *groupWorld, uid string) *outsider {
	t.Helper()
	o := &outsider{identity: w.app.User(t, uid)}
	var err error
	if o.keys, err = e2ee.GenerateKeyPair(e2ee.SuiteX25519); err != nil {
		t.Fatal(err)
	}
	content, sig, err := e2ee.NewCard(o.keys, o.identity, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+w.app.Token(t, o.identity))
	if _, err := cardv1.NewCardServiceClient(w.n.Conn()).PublishCard(ctx, &cardv1.PublishCardRequest{Content: content, SelfSignature: sig}); err != nil {
		t.Fatal(err)
	}
	if o.card, err = e2ee.ParseCard(content, sig); err != nil {
		t.Fatal(err)
	}
	return o
}

// keysOf opens d's keystore (unencrypted in these tests): the test signs as d, as a
// colluding member would.
func keysOf(t *testing.T, d *device) (*e2ee.KeyPair, []byte) {
	t.Helper()
	ks, err := keystore.Open(d.keystore, nil)
	if err != nil {
		t.Fatal(err)
	}
	kp, card := ks.Current()
	return kp, card
}

// TestTamperGhostMemberGetsNoKey: the service lists a ghost member (mallory, who has a
// card) in the group's member list. Alice's client rotates for the members of the
// chain it verified, so no key is wrapped to the ghost; the honest members read on.
// Fails if the SDK wraps to the service's member list.
func TestTamperGhostMemberGetsNoKey(t *testing.T) {
	t.Parallel()
	w := newGroupWorld(t, "bob")
	ctx := context.Background()
	bob := w.users["bob"]
	mallory := newOutsider(t, w, "mallory")
	tp := newTamper()
	alice := newTamperedDevice(t, w, "alice", tp)
	g := w.createGroup(t, alice, bob)
	tp.on(groupv1.GroupService_GetGroup_FullMethodName, func(_, reply any) {
		grp := reply.(*groupv1.GetGroupResponse).GetGroup()
		grp.Members = append(grp.Members, &groupv1.Member{Identity: mallory.identity, Role: groupv1.GroupRole_GROUP_ROLE_MEMBER})
		grp.MemberCount++
	})
	if info, err := g.Info(ctx); err != nil || len(info.GetMembers()) != 3 {
		t.Fatalf("the tampered member list: %v, %v", info, err)
	}
	mustSend(t, g, "for alice and bob only")
	commits := tp.sent(groupv1.GroupService_CommitEpoch_FullMethodName)
	if len(commits) == 0 {
		t.Fatal("alice committed no epoch")
	}
	for _, r := range commits {
		for _, k := range r.(*groupv1.CommitEpochRequest).GetKeys() {
			if k.GetIdentity() == mallory.identity || bytes.Equal(k.GetWrappedKey().GetRecipientCardId(), mallory.card.ID) {
				t.Fatalf("alice wrapped the epoch key to the ghost member %s", mallory.identity)
			}
		}
	}
	wantReads(t, "bob", bob, w.group, "for alice and bob only")
}

// malloryScene is the world of the forged statements: alice and carol, mallory (an
// outsider with keys of its own), and bob on a device whose answers tp tampers with,
// in alice's group with carol.
func malloryScene(t *testing.T) (w *groupWorld, mallory *outsider, tp *tamper, bob *device) {
	t.Helper()
	w = newGroupWorld(t, "alice", "carol")
	mallory = newOutsider(t, w, "mallory")
	tp = newTamper()
	bob = newTamperedDevice(t, w, "bob", tp)
	members := sdk.CreateGroupOptions{Members: []string{bob.identity, w.users["carol"].identity}}
	if _, _, err := w.users["alice"].CreateGroup(context.Background(), w.group, members); err != nil {
		t.Fatal(err)
	}
	return w, mallory, tp, bob
}

// newTamperedDevice is a registered device of uid whose calls go through tp.
func newTamperedDevice(t *testing.T, w *groupWorld, uid string, tp *tamper) *device {
	t.Helper()
	return newInterceptedDevice(t, w, uid, tp.interceptor)
}

// chainRewrite returns a rewrite of GetMembershipChain replies: edit gets the whole
// chain (the client asks from the start on its first sync; later looks pass) and
// returns the statements to serve; the head is moved to
// the last of them.
func chainRewrite(t *testing.T, edit func([]*envelopev1.SignedMembershipStatement) []*envelopev1.SignedMembershipStatement) func(req, reply any) {
	return func(req, reply any) {
		r := reply.(*groupv1.GetMembershipChainResponse)
		if req.(*groupv1.GetMembershipChainRequest).GetAfterSequence() > 0 {
			return // a later look after the first: the edits are of the whole chain
		}
		served := edit(r.GetStatements())
		if n := len(served); n > 0 {
			r.HeadSequence += uint64(n) - uint64(len(r.GetStatements()))
			r.HeadHash = e2ee.StatementHash(served[n-1].GetContent())
		}
		r.Statements = served
	}
}

// TestTamperForgedStatements: the service serves a chain with a statement no one may
// make, to put mallory in the group: an addition signed by mallory herself or by a
// plain member, an owner's statement altered after signing, the service's own
// addition. Bob's client refuses each with ErrMembershipChain and the kind that names
// what failed, and commits nothing.
func TestTamperForgedStatements(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// forge returns the statement after the chain's last (sequence seq, previous
		// hash prev), by alice (owner), carol (a member) or mallory.
		forge func(t *testing.T, seq uint64, prev []byte, alice, carol, mallory signerKeys) *envelopev1.SignedMembershipStatement
		want  error
	}{
		{"added by herself", func(t *testing.T, seq uint64, prev []byte, _, _, mallory signerKeys) *envelopev1.SignedMembershipStatement {
			return mallory.sign(t, seq, prev, e2ee.MembershipChange{Kind: e2ee.KindAdd, Subjects: []string{someone}})
		}, e2ee.ErrNotAuthorized},
		{"added by a plain member", func(t *testing.T, seq uint64, prev []byte, _, carol, mallory signerKeys) *envelopev1.SignedMembershipStatement {
			return carol.sign(t, seq, prev, e2ee.MembershipChange{Kind: e2ee.KindAdd, Subjects: []string{mallory.identity}})
		}, e2ee.ErrNotAuthorized},
		{"an owner's invitation turned into an addition", func(t *testing.T, seq uint64, prev []byte, alice, _, mallory signerKeys) *envelopev1.SignedMembershipStatement {
			st := alice.sign(t, seq, prev, e2ee.MembershipChange{Kind: e2ee.KindInvite, Subjects: []string{mallory.identity}, ExpiresAt: time.Now().Add(time.Hour)})
			st.Content = recodeStatement(t, st.GetContent(), func(m *envelopev1.MembershipStatementContent) {
				m.Kind, m.ExpiresAtUnixSeconds = e2ee.KindAdd, 0
			})
			return st
		}, e2ee.ErrBadSignature},
		{"added by the service", func(t *testing.T, seq uint64, prev []byte, _, _, mallory signerKeys) *envelopev1.SignedMembershipStatement {
			st, err := e2ee.ServiceRemoveStatement(mallory.group, seq, prev, mallory.identity, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			st.Content = recodeStatement(t, st.GetContent(), func(m *envelopev1.MembershipStatementContent) { m.Kind = e2ee.KindAdd })
			return st
		}, e2ee.ErrNotAuthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, mallory, tp, bob := malloryScene(t)
			ctx := context.Background()
			alice, carol := w.users["alice"], w.users["carol"]
			akp, acard := keysOf(t, alice)
			ckp, ccard := keysOf(t, carol)
			keys := func(id string, kp *e2ee.KeyPair, card []byte) signerKeys {
				return signerKeys{identity: id, group: w.group, kp: kp, card: card}
			}
			tp.on(groupv1.GroupService_GetMembershipChain_FullMethodName, chainRewrite(t, func(chain []*envelopev1.SignedMembershipStatement) []*envelopev1.SignedMembershipStatement {
				last, err := e2ee.ParseMembershipStatement(chain[len(chain)-1])
				if err != nil {
					t.Fatal(err)
				}
				forged := tc.forge(t, last.Sequence+1, last.Hash, keys(alice.identity, akp, acard), keys(carol.identity, ckp, ccard), keys(mallory.identity, mallory.keys, mallory.card.ID))
				return append(chain, forged)
			}))
			_, err := bob.Group(w.group).Send(ctx, []byte("for the members"))
			if !errors.Is(err, sdk.ErrMembershipChain) || !errors.Is(err, tc.want) {
				t.Fatalf("bob sends over a forged chain: %v; want ErrMembershipChain and %v", err, tc.want)
			}
			if n := len(tp.sent(groupv1.GroupService_CommitEpoch_FullMethodName)); n != 0 {
				t.Fatalf("bob committed %d epochs over a forged chain", n)
			}
		})
	}
}

// someone is an identity nobody has.
const someone = "u_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"

// signerKeys are the keys of a member (or outsider) the test signs statements as.
type signerKeys struct {
	identity, group string
	kp              *e2ee.KeyPair
	card            []byte
}

func (k signerKeys) sign(t *testing.T, seq uint64, prev []byte, change e2ee.MembershipChange) *envelopev1.SignedMembershipStatement {
	t.Helper()
	st, err := e2ee.SignMembershipStatement(k.kp, k.card, k.identity, k.group, seq, prev, change, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// recodeStatement returns content with change applied, canonically encoded.
func recodeStatement(t *testing.T, content []byte, change func(*envelopev1.MembershipStatementContent)) []byte {
	t.Helper()
	var m envelopev1.MembershipStatementContent
	if err := proto.Unmarshal(content, &m); err != nil {
		t.Fatal(err)
	}
	change(&m)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTamperChainRemovedOrReordered: alice creates the group with bob, carol and dave,
// removes carol, and adds erin. The service serves bob's client the chain without the
// removal (so that carol would still get keys), or with two statements swapped, or,
// after bob verified the whole chain, an older head. Bob's client refuses each with
// ErrBrokenChain and commits nothing.
func TestTamperChainRemovedOrReordered(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// edit changes the whole chain: create, remove carol, add erin.
		edit func([]*envelopev1.SignedMembershipStatement) []*envelopev1.SignedMembershipStatement
		// later arms the tamper only after bob verified the honest chain.
		later bool
	}{
		{"the removal dropped", func(c []*envelopev1.SignedMembershipStatement) []*envelopev1.SignedMembershipStatement {
			return []*envelopev1.SignedMembershipStatement{c[0], c[2]}
		}, false},
		{"two statements swapped", func(c []*envelopev1.SignedMembershipStatement) []*envelopev1.SignedMembershipStatement {
			return []*envelopev1.SignedMembershipStatement{c[0], c[2], c[1]}
		}, false},
		{"a statement repeated", func(c []*envelopev1.SignedMembershipStatement) []*envelopev1.SignedMembershipStatement {
			return []*envelopev1.SignedMembershipStatement{c[0], c[1], c[1], c[2]}
		}, false},
		{"the head rolled back", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newGroupWorld(t, "alice", "carol", "dave", "erin")
			ctx := context.Background()
			alice, carol, dave, erin := w.users["alice"], w.users["carol"], w.users["dave"], w.users["erin"]
			tp := newTamper()
			bob := newTamperedDevice(t, w, "bob", tp)
			g := w.createGroup(t, alice, bob, carol, dave)
			if err := g.Remove(ctx, carol.identity); err != nil {
				t.Fatal(err)
			}
			if _, err := g.Add(ctx, erin.identity); err != nil {
				t.Fatal(err)
			}
			bg := bob.Group(w.group)
			if tc.later {
				if _, err := bg.Membership(ctx); err != nil {
					t.Fatal(err)
				}
				// The service now shows bob the chain without its last statement.
				tp.on(groupv1.GroupService_GetMembershipChain_FullMethodName, func(_, reply any) {
					r := reply.(*groupv1.GetMembershipChainResponse)
					r.Statements = nil
					r.HeadSequence--
				})
			} else {
				tp.on(groupv1.GroupService_GetMembershipChain_FullMethodName, chainRewrite(t, tc.edit))
			}
			var err error
			if tc.later {
				// Bob's next look at the chain (a rotation only looks when the head it
				// is told of differs from the one it holds).
				_, err = bg.Membership(ctx)
			} else {
				_, err = bg.Send(ctx, []byte("for the members"))
			}
			if !errors.Is(err, sdk.ErrMembershipChain) || !errors.Is(err, e2ee.ErrBrokenChain) {
				t.Fatalf("bob sends over a tampered chain: %v; want ErrMembershipChain and ErrBrokenChain", err)
			}
			if n := len(tp.sent(groupv1.GroupService_CommitEpoch_FullMethodName)); n != 0 {
				t.Fatalf("bob committed %d epochs over a tampered chain", n)
			}
		})
	}
}

// TestTamperCommitForAnotherHead: the service hands bob an epoch key whose commit
// names a membership head that is not in the chain bob verified (a commit made for
// another membership, here re-signed by alice's key as a colluding or deceived
// member would have it), or a head at which its signer was not a member yet. Bob's
// client refuses the key.
func TestTamperCommitForAnotherHead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// head returns the head the forged commit names, from the real one.
		head func(real e2ee.MembershipHead) e2ee.MembershipHead
		// signer is whose keys sign it: "alice" (the owner) or "erin" (who joined at
		// the last statement).
		signer string
		want   []error
	}{
		{"a head of another chain", func(real e2ee.MembershipHead) e2ee.MembershipHead {
			return e2ee.MembershipHead{Sequence: real.Sequence, Hash: bytes.Repeat([]byte{7}, 32)}
		}, "alice", []error{sdk.ErrMembershipChain, e2ee.ErrBrokenChain}},
		{"a head beyond the chain", func(real e2ee.MembershipHead) e2ee.MembershipHead {
			return e2ee.MembershipHead{Sequence: real.Sequence + 5, Hash: bytes.Repeat([]byte{7}, 32)}
		}, "alice", []error{sdk.ErrMembershipChain, e2ee.ErrBrokenChain}},
		{"a head before its signer joined", func(real e2ee.MembershipHead) e2ee.MembershipHead {
			return e2ee.MembershipHead{Sequence: 1}
		}, "erin", []error{e2ee.ErrNotMember}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newGroupWorld(t, "alice", "erin")
			ctx := context.Background()
			alice, erin := w.users["alice"], w.users["erin"]
			tp := newTamper()
			bob := newTamperedDevice(t, w, "bob", tp)
			g := w.createGroup(t, alice, bob)
			if _, err := g.Add(ctx, erin.identity); err != nil {
				t.Fatal(err)
			}
			mustSend(t, g, "for the members")
			signer := map[string]*device{"alice": alice, "erin": erin}[tc.signer]
			kp, card := keysOf(t, signer)
			var forged bool
			tp.on(groupv1.GroupService_GetEpochKeys_FullMethodName, func(_, reply any) {
				for _, k := range reply.(*groupv1.GetEpochKeysResponse).GetKeys() {
					c := k.GetCommit()
					var m envelopev1.EpochCommitContent
					if err := proto.Unmarshal(c.GetCommit().GetContent(), &m); err != nil {
						t.Error(err)
						return
					}
					head := tc.head(e2ee.MembershipHead{Sequence: m.GetMembershipSequence(), Hash: m.GetMembershipHash()})
					if head.Hash == nil {
						head.Hash = bytesAt(t, ctx, w, alice, head.Sequence)
					}
					m.MembershipSequence, m.MembershipHash, m.SignerCardId = head.Sequence, head.Hash, card
					content, err := proto.MarshalOptions{Deterministic: true}.Marshal(&m)
					if err != nil {
						t.Error(err)
						return
					}
					sig := ed25519.Sign(kp.Signing, append([]byte(e2ee.LabelEpochCommitSignature+"\x00"), content...))
					c.Commit = &envelopev1.SignedEpochCommit{Content: content, Signature: sig}
					c.CommittedBy, c.CommitHash = signer.identity, nil
					forged = true
				}
			})
			_, errs := readGroup(t, bob, w.group)
			if !forged || len(errs) != 1 {
				t.Fatalf("bob reads the message under a forged commit (forged: %v): %v", forged, errs)
			}
			for _, want := range tc.want {
				if !errors.Is(errs[0], want) {
					t.Fatalf("bob's error %v; want %v", errs[0], want)
				}
			}
		})
	}
}

// bytesAt is the hash of statement seq of the group's real chain, as alice reads it.
func bytesAt(t *testing.T, ctx context.Context, w *groupWorld, alice *device, seq uint64) []byte {
	t.Helper()
	m, err := alice.Group(w.group).Membership(ctx)
	if err != nil {
		t.Error(err)
		return nil
	}
	return m.HashAt(seq)
}

// TestTamperStatementSignedWithASubstitutedCard: the operator serves, as alice's active
// card, a card whose keys it holds (counter-signed with the real service key), and a
// statement "alice adds mallory" signed with it. Bob's client pinned alice's real card
// when it first verified the chain, so the statement's signer card is a key change and
// the chain is refused: mallory is never a member. Fails if the signer cards of
// statements are taken from the directory without the pin check.
func TestTamperStatementSignedWithASubstitutedCard(t *testing.T) {
	t.Parallel()
	w, mallory, tp, bob := malloryScene(t)
	ctx := context.Background()
	alice := w.users["alice"]
	g := bob.Group(w.group)
	if _, err := g.Membership(ctx); err != nil { // pins alice's and carol's cards
		t.Fatal(err)
	}

	key, kid := operatorKey(t, w.n)
	forged, forgedKeys, _ := forgedCard(t, alice.identity, nil, nil, key, kid)
	// The forged card is served by id (the log proves alice's real card to bob's
	// lookups, so it reaches him only as a statement's signer card).
	tp.answer(cardv1.CardService_GetCard_FullMethodName, func(req, reply any) bool {
		if !bytes.Equal(req.(*cardv1.GetCardRequest).GetCardId(), forged.GetCardId()) {
			return false
		}
		reply.(*cardv1.GetCardResponse).Card = proto.Clone(forged).(*cardv1.Card)
		return true
	})
	tp.on(groupv1.GroupService_GetMembershipChain_FullMethodName, func(_, reply any) {
		r := reply.(*groupv1.GetMembershipChainResponse)
		st := signerKeys{identity: alice.identity, group: w.group, kp: forgedKeys, card: forged.GetCardId()}.
			sign(t, r.GetHeadSequence()+1, r.GetHeadHash(), e2ee.MembershipChange{Kind: e2ee.KindAdd, Subjects: []string{mallory.identity}})
		r.Statements = append(r.Statements, st)
		r.HeadSequence++
		r.HeadHash = e2ee.StatementHash(st.GetContent())
	})
	_, err := g.Membership(ctx)
	var changed *sdk.KeyChangedError
	if !errors.As(err, &changed) || changed.Identity != alice.identity {
		t.Fatalf("bob verifies a statement signed with a substituted card of alice: %v; want a key change of alice (nil: mallory was taken as a member)", err)
	}
}
