package sdk_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// The group benchmarks run against a whole node on loopback (nodetest), with the
// per-identity rate limits of card search, send and group calls lifted so that they
// measure the work, not the limiter.
//
//	go test -run='^$' -bench='^Benchmark(GroupRotation|Send)$' -benchtime=20x ./pkg/sdk
//
// BenchmarkGroupRotation is a group of 1,000 members (and one of 100, the size the
// TypeScript SDK's benchmark rotates too: clients/typescript/bench) whose membership
// chain is the longest and most varied its joining can make: the owner invited each
// member, and each accepted with a statement signed by its own card (1,999 statements,
// 1,000 signer cards). Its sub-benchmarks, measured in the same run:
//
//   - rotate: one rotation end to end, as the SDK does it after a membership change,
//     by a client that verified the chain before: GetEpochState (the head matches the
//     one verified), FindCards of the 1,000 members of the verified chain (each card's
//     self-signature and counter-signature verified), a fresh key wrapped to 1,000
//     cards, and StageEpochKeys + CommitEpoch, which the service checks against the
//     members' active cards and the membership head;
//   - verify-chain: a new client of the owner (nothing cached) fetching and verifying
//     the whole chain: every statement's signature, signer card (fetched and
//     verified: 1,000 cards) and lifetime, link and role rules;
//   - rotate-fresh: a new client's first rotation, chain verification included;
//   - rotate-new-device: the same on a client whose pin file is empty, which pins every
//     other member on first use.
//
// BenchmarkSend is a 1 KiB message sent in a two-member group next to the same message
// sent as a direct (envelope) message, which looks up the recipient's card every time.

const benchGroupMembers = 1000

func benchNode(b *testing.B) (*nodetest.Node, *nodetest.App) {
	return startNode(b, func(cfg *node.Config) {
		cfg.Card.SearchRate, cfg.Card.SearchBurst = 1e6, 1e6
		cfg.Messaging.SendRate, cfg.Messaging.SendBurst = 1e6, 1e6
		cfg.Group.CallRate, cfg.Group.CallBurst = 1e6, 1e6
	})
}

func BenchmarkGroupRotation(b *testing.B) {
	for _, suite := range []e2ee.Suite{e2ee.SuiteX25519, e2ee.SuiteHybrid} {
		for _, members := range []int{100, benchGroupMembers} {
			benchGroupRotation(b, suite, members)
		}
	}
}

func benchGroupRotation(b *testing.B, suite e2ee.Suite, members int) {
	b.Run(fmt.Sprintf("suite=%s/members=%d", suite, members), func(b *testing.B) {
		n, app := benchNode(b)
		ctx := context.Background()
		owner := newQuickDevice(b, n, app, "owner", suite)
		mustRegister(b, owner)
		group := app.Group(b, "big")
		g := invitedGroup(b, n, app, owner, group, suite, members-1)
		if m, err := g.Membership(ctx); err != nil || m.MemberCount() != members || m.Sequence() != uint64(2*members-1) {
			b.Fatalf("the group's chain: %v", err)
		}
		client := func(b *testing.B, pins string) *sdk.Group {
			c, err := sdk.New(ctx, sdk.Config{Addr: n.GRPC, Token: app.TokenFunc(owner.identity), KeystorePath: owner.keystore, TrustStorePath: pins, NoPassphrase: true, Suite: suite})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() })
			return c.Group(group)
		}
		// fresh is a new client of the owner, with nothing verified or cached; its
		// pins are the owner's (the same files). newDevice is a fresh client whose pin
		// file is empty, as on a device that restored the keys but no pins: it pins
		// all the other members on first use.
		fresh := func(b *testing.B) *sdk.Group { return client(b, "") }
		newDevice := func(b *testing.B) *sdk.Group { return client(b, filepath.Join(b.TempDir(), "pins")) }
		b.Run("rotate", func(b *testing.B) {
			for b.Loop() {
				if err := g.Rotate(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(members), "µs/member")
		})
		b.Run("verify-chain", func(b *testing.B) {
			for b.Loop() {
				if _, err := fresh(b).Membership(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(2*members-1), "µs/statement")
		})
		b.Run("rotate-fresh", func(b *testing.B) {
			for b.Loop() {
				if err := fresh(b).Rotate(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("rotate-new-device", func(b *testing.B) {
			for b.Loop() {
				if err := newDevice(b).Rotate(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// invitedGroup makes group, owned by owner, whose other count members each joined by
// accepting the owner's invitation with a statement of its own (signed with e2ee
// directly, through the group service's gRPC API: the members need no SDK client).
func invitedGroup(b *testing.B, n *nodetest.Node, app *nodetest.App, owner *device, group string, suite e2ee.Suite, count int) *sdk.Group {
	b.Helper()
	ctx := context.Background()
	g, _, err := owner.CreateGroup(ctx, group, sdk.CreateGroupOptions{})
	if err != nil {
		b.Fatal(err)
	}
	groups := groupv1.NewGroupServiceClient(n.Conn())
	for _, m := range publishMembers(b, n, app, suite, count) {
		if _, err := g.Invite(ctx, m.identity, 0); err != nil {
			b.Fatal(err)
		}
		chain, err := g.Membership(ctx)
		if err != nil {
			b.Fatal(err)
		}
		invitation, _, _ := chain.Invitation(m.identity)
		st, err := e2ee.SignMembershipStatement(m.keys, m.cardID, m.identity, group, chain.Sequence()+1, chain.Head(),
			e2ee.MembershipChange{Kind: e2ee.KindAcceptInvitation, InvitationHash: invitation}, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		mctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+app.Token(b, m.identity))
		if _, err := groups.AcceptInvitation(mctx, &groupv1.AcceptInvitationRequest{GroupId: group, Statement: st}); err != nil {
			b.Fatal(err)
		}
	}
	return g
}

// benchMember is an identity with a card and its keys, without an SDK client.
type benchMember struct {
	identity string
	keys     *e2ee.KeyPair
	cardID   []byte
}

// publishMembers gives each of count new identities an active card of suite.
func publishMembers(b *testing.B, n *nodetest.Node, app *nodetest.App, suite e2ee.Suite, count int) []benchMember {
	b.Helper()
	ctx := context.Background()
	cards := cardv1.NewCardServiceClient(n.Conn())
	out := make([]benchMember, count)
	for i := range out {
		m := &out[i]
		m.identity = app.User(b, fmt.Sprintf("member-%d", i))
		var err error
		if m.keys, err = e2ee.GenerateKeyPair(suite); err != nil {
			b.Fatal(err)
		}
		content, sig, err := e2ee.NewCard(m.keys, m.identity, time.Now(), nil)
		if err != nil {
			b.Fatal(err)
		}
		tctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+app.Token(b, m.identity))
		if _, err := cards.PublishCard(tctx, &cardv1.PublishCardRequest{Content: content, SelfSignature: sig}); err != nil {
			b.Fatal(err)
		}
		m.cardID = e2ee.CardID(content)
	}
	return out
}

func BenchmarkSend(b *testing.B) {
	n, app := benchNode(b)
	ctx := context.Background()
	alice := newQuickDevice(b, n, app, "alice", e2ee.SuiteX25519)
	bob := newQuickDevice(b, n, app, "bob", e2ee.SuiteX25519)
	mustRegister(b, alice, bob)
	g, _, err := alice.CreateGroup(ctx, app.Group(b, "pair"), sdk.CreateGroupOptions{Members: []string{bob.identity}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := g.Send(ctx, []byte("epoch 1")); err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 1024)
	b.Run("kind=group", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := g.Send(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kind=direct", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := alice.SendTo(ctx, bob.identity, msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same with 32 concurrent senders on alice's client: throughput rather than
	// one sender's latency (the messaging service commits concurrent sends together).
	b.Run("kind=group/senders=32", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := g.Send(ctx, msg); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("kind=direct/senders=32", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := alice.SendTo(ctx, bob.identity, msg); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}
