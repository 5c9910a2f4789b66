package sdk_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/node"
	"github.com/umbra-e2ee/umbra/pkg/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// The group benchmarks run against a whole node on loopback (nodetest), with the
// per-identity rate limits of card search and send lifted so that they measure the
// work, not the limiter.
//
//	go test -run='^$' -bench='^Benchmark(GroupRotation|Send)$' -benchtime=20x ./pkg/sdk
//
// BenchmarkGroupRotation is one rotation of a group of 1,000 members end to end, as
// the SDK does it after a membership change: GetEpochState, GetGroup, FindCards of
// 1,000 identities (each card's self-signature and counter-signature verified), a
// fresh key wrapped to 1,000 cards, and StageEpochKeys + CommitEpoch, which the
// service checks against the members' active cards. BenchmarkSend is a 1 KiB message
// sent in a two-member group next to the same message sent as a direct (envelope)
// message, which looks up the recipient's card every time.

const benchGroupMembers = 1000

func benchNode(b *testing.B) (*nodetest.Node, *nodetest.App) {
	n := nodetest.Start(b, func(cfg *node.Config) {
		cfg.CardSearchRate, cfg.CardSearchBurst = 1e6, 1e6
		cfg.Messaging.SendRate, cfg.Messaging.SendBurst = 1e6, 1e6
	})
	return n, n.NewApp(b)
}

// publishCards gives each of count new identities an active card of suite, with no SDK
// client behind it: the members only need to be encrypted to.
func publishCards(b *testing.B, n *nodetest.Node, app *nodetest.App, suite e2ee.Suite, count int) []string {
	b.Helper()
	ctx := context.Background()
	cards := cardv1.NewCardServiceClient(n.Conn())
	ids := make([]string, count)
	for i := range ids {
		ids[i] = app.User(b, fmt.Sprintf("member-%d", i))
		kp, err := e2ee.GenerateKeyPair(suite)
		if err != nil {
			b.Fatal(err)
		}
		content, sig, err := e2ee.NewCard(kp, ids[i], time.Now(), nil)
		if err != nil {
			b.Fatal(err)
		}
		tctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+app.Token(b, ids[i]))
		if _, err := cards.PublishCard(tctx, &cardv1.PublishCardRequest{Content: content, SelfSignature: sig}); err != nil {
			b.Fatal(err)
		}
	}
	return ids
}

func BenchmarkGroupRotation(b *testing.B) {
	for _, suite := range []e2ee.Suite{e2ee.SuiteX25519, e2ee.SuiteHybrid} {
		b.Run(fmt.Sprintf("suite=%s/members=%d", suite, benchGroupMembers), func(b *testing.B) {
			n, app := benchNode(b)
			ctx := context.Background()
			owner := newQuickDevice(b, n, app, "owner", suite)
			if _, err := owner.Register(ctx); err != nil {
				b.Fatal(err)
			}
			members := publishCards(b, n, app, suite, benchGroupMembers-1)
			g, _, err := owner.CreateGroup(ctx, app.Group(b, "big"), sdk.CreateGroupOptions{Members: members})
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := g.Rotate(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/benchGroupMembers, "µs/member")
		})
	}
}

func BenchmarkSend(b *testing.B) {
	n, app := benchNode(b)
	ctx := context.Background()
	alice := newQuickDevice(b, n, app, "alice", e2ee.SuiteX25519)
	bob := newQuickDevice(b, n, app, "bob", e2ee.SuiteX25519)
	for _, d := range []*device{alice, bob} {
		if _, err := d.Register(ctx); err != nil {
			b.Fatal(err)
		}
	}
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
