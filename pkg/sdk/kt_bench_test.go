package sdk_test

import (
	"context"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// BenchmarkFindCards is a lookup of 1,000 identities, each with a card, through the
// Go SDK over loopback gRPC: with proofs (SearchCardsWithProofs, every proof and the
// checkpoint verified; the checkpoint unchanged since the client kept it) and, in the
// same run, without (SearchCards, what the SDK did before key transparency; test-only
// switch). Both verify every card's self-signature and counter-signature and pin
// nothing (FindCards). reply-B/identity is the size of the answer.
//
//	go test -run='^$' -bench='^BenchmarkFindCards$' -benchtime=20x ./pkg/sdk
func BenchmarkFindCards(b *testing.B) {
	n, app := benchNode(b)
	ctx := context.Background()
	members := publishMembers(b, n, app, e2ee.SuiteX25519, benchGroupMembers)
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m.identity
	}
	reader := app.User(b, "reader")
	for _, tc := range []struct {
		name   string
		proofs bool
	}{{"proofs", true}, {"no-proofs", false}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := sdk.Config{Addr: n.GRPC, Token: app.TokenFunc(reader), KeystorePath: filepath.Join(b.TempDir(), "keystore"), NoPassphrase: true}
			if !tc.proofs {
				cfg = sdk.WithoutKeyTransparency(cfg)
			}
			c, err := sdk.New(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			// The first lookup waits for the checkpoint that holds every card, and
			// pins the log key and the service key.
			if found, err := c.FindCards(ctx, ids...); err != nil || len(found) != len(ids) {
				b.Fatalf("FindCards = %d cards, %v", len(found), err)
			}
			cards := cardv1.NewCardServiceClient(c.Conn())
			size := 0
			if tc.proofs {
				resp, err := cards.SearchCardsWithProofs(ctx, &cardv1.SearchCardsWithProofsRequest{Identities: ids})
				if err != nil {
					b.Fatal(err)
				}
				size = proto.Size(resp)
			} else {
				resp, err := cards.SearchCards(ctx, &cardv1.SearchCardsRequest{Identities: ids})
				if err != nil {
					b.Fatal(err)
				}
				size = proto.Size(resp)
			}
			b.ResetTimer()
			for range b.N {
				if _, err := c.FindCards(ctx, ids...); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*len(ids))/b.Elapsed().Seconds(), "identities/s")
			b.ReportMetric(float64(size)/float64(len(ids)), "reply-B/identity")
		})
	}
}
