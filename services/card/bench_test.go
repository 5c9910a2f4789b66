package card

import (
	"context"
	"fmt"
	"testing"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

const benchIdentities = 1000

// BenchmarkSearchCards looks up the active cards of 1,000 identities in one call, for
// each suite:
//
//   - grpc: SearchCards over loopback gRPC through the production interceptors (token
//     verification, rate limiter, logging, error mapping) and protobuf on the wire;
//   - store: the same lookup through Store.ActiveCards, without gRPC;
//   - bbolt: the baseline, a raw read of the same values in one bbolt transaction
//     (the active card's copy kept for searches), copied out with no decoding;
//   - grpc-proofs and store-proofs: the same 1,000 identities looked up with key
//     transparency proofs (SearchCardsWithProofs, Store.ProvedCards), in a log and map
//     that hold 100,000 identities (the 1,000 and 99,000 others); grpc-proofs-parallel
//     from several clients at once (GOMAXPROCS goroutines).
//
// Each reports identities/s; the goal for grpc is at least 100,000, for grpc-proofs
// 50,000.
func BenchmarkSearchCards(b *testing.B) {
	for _, suite := range []e2ee.Suite{e2ee.SuiteX25519, e2ee.SuiteHybrid} {
		b.Run(suite.String(), func(b *testing.B) {
			e := newEnv(b, envOptions{quiet: true, cfg: Config{SearchRate: 1e9, SearchBurst: 1 << 30}})
			a := e.newApp(b, "bench")
			ids := benchPublish(b, e, a, suite)
			searcher := e.newUser(b, a, "searcher")
			req := &cardv1.SearchCardsRequest{Identities: ids}
			resp, err := e.client.SearchCards(searcher.ctx(), req)
			if err != nil {
				b.Fatal(err)
			}
			if len(resp.GetCards()) != benchIdentities {
				b.Fatalf("search found %d cards, want %d", len(resp.GetCards()), benchIdentities)
			}

			var next uint64
			for range 99 {
				benchEvents(b, e.store, "app_other", &next, 1000)
			}
			if _, err := e.srv.PublishCheckpoint(context.Background()); err != nil {
				b.Fatal(err)
			}

			benchSearch(b, e, e.store, a.id, ids, searcher)
			b.Run("bbolt", func(b *testing.B) {
				buf := make([]byte, 0, 4<<20)
				for b.Loop() {
					buf = buf[:0]
					err := e.store.DB().View(func(tx *bolt.Tx) error {
						active := tx.Bucket(bucketActive)
						for _, id := range ids {
							v := active.Get(boltdb.Key(a.id, id))
							if v == nil {
								return fmt.Errorf("no active card for %s", id)
							}
							buf = append(buf, v...)
						}
						return nil
					})
					if err != nil {
						b.Fatal(err)
					}
				}
				reportIdentities(b)
			})
		})
	}
}

func reportIdentities(b *testing.B) {
	b.ReportMetric(float64(benchIdentities*b.N)/b.Elapsed().Seconds(), "identities/s")
}

// benchSearch runs the sub-benchmarks of BenchmarkSearchCards that every engine has,
// with the 1,000 identities ids of appID in store, looked up by searcher: grpc, store,
// grpc-proofs, grpc-proofs-parallel and store-proofs.
func benchSearch(b *testing.B, e *env, store Store, appID string, ids []string, searcher user) {
	req := &cardv1.SearchCardsRequest{Identities: ids}
	proofReq := &cardv1.SearchCardsWithProofsRequest{Identities: ids}
	b.Run("grpc", func(b *testing.B) {
		ctx := searcher.ctx()
		for b.Loop() {
			resp, err := e.client.SearchCards(ctx, req)
			if err != nil || len(resp.GetCards()) != benchIdentities {
				b.Fatalf("%d cards, %v", len(resp.GetCards()), err)
			}
		}
		reportIdentities(b)
	})
	b.Run("store", func(b *testing.B) {
		for b.Loop() {
			recs, err := store.ActiveCards(appID, ids)
			if err != nil || len(recs) != benchIdentities {
				b.Fatalf("%d cards, %v", len(recs), err)
			}
		}
		reportIdentities(b)
	})
	b.Run("grpc-proofs", func(b *testing.B) {
		ctx := searcher.ctx()
		var resp *cardv1.SearchCardsWithProofsResponse
		for b.Loop() {
			var err error
			if resp, err = e.client.SearchCardsWithProofs(ctx, proofReq); err != nil {
				b.Fatal(err)
			}
		}
		reportIdentities(b)
		b.ReportMetric(float64(proto.Size(resp))/benchIdentities, "bytes/identity")
	})
	b.Run("grpc-proofs-parallel", func(b *testing.B) {
		benchProofsParallel(b, searcher.ctx(), e.client, proofReq)
	})
	b.Run("store-proofs", func(b *testing.B) {
		for b.Loop() {
			_, proved, err := store.ProvedCards(appID, ids)
			if err != nil || len(proved) != benchIdentities {
				b.Fatalf("%d proofs, %v", len(proved), err)
			}
		}
		reportIdentities(b)
	})
}

// benchProofsParallel calls SearchCardsWithProofs with req from several clients at
// once: what the server's two cores give, where grpc-proofs is one client's calls one
// after another.
func benchProofsParallel(b *testing.B, ctx context.Context, client cardv1.CardServiceClient, req *cardv1.SearchCardsWithProofsRequest) {
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.SearchCardsWithProofs(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportIdentities(b)
}

// benchPublish gives 1,000 identities of a a card of suite, published over gRPC, and
// returns the identities.
func benchPublish(b *testing.B, e *env, a app, suite e2ee.Suite) []string {
	b.Helper()
	uids := make([]string, benchIdentities)
	for i := range uids {
		uids[i] = fmt.Sprint("user", i)
	}
	resolved, err := e.ids.ResolveIdentities(as(a.key), &identityv1.ResolveIdentitiesRequest{Uids: uids})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, len(uids))
	for i, uid := range uids {
		ids[i] = resolved.GetUsers()[uid]
		tok, err := e.ids.IssueToken(as(a.key), &identityv1.IssueTokenRequest{Identity: ids[i]})
		if err != nil {
			b.Fatal(err)
		}
		u := user{app: a, identity: ids[i], token: tok.GetAccessToken()}
		e.publish(b, u, newKeys(b, suite), nil, nil)
	}
	return ids
}
