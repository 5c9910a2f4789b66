package card

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// benchEvents appends n publication events of new identities of app to the card
// event feed, in one transaction, as the card store's Publish writes them (the cards
// themselves are not stored: the log reads only the feed). next numbers the
// identities.
func benchEvents(b *testing.B, s *BoltStore, app string, next *uint64, n int) {
	b.Helper()
	at := timestamppb.New(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	err := s.DB().Update(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		for range n {
			*next++
			id := "u_" + b32.EncodeToString(binary.BigEndian.AppendUint64(make([]byte, 12), *next))
			card := sha256.Sum256([]byte(id))
			seq, err := events.NextSequence()
			if err != nil {
				return err
			}
			if err := boltdb.PutProto(events, boltdb.U64(seq), &cardstoragev1.CardEventRecord{
				Sequence: seq, AppId: app, Identity: id, CardId: card[:],
				Kind: cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_PUBLISHED, OccurredAt: at,
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// ktBytes is the bytes (keys and values) in the key transparency buckets, and in the
// buckets of cards and their events.
func ktBytes(b *testing.B, s *BoltStore) (kt, cards int) {
	b.Helper()
	err := s.DB().View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketKTLeaves, bucketKTLogTiles, bucketKTMapTiles, bucketKTMapValues, bucketKTCheckpoints, bucketKTLogKey} {
			_ = tx.Bucket(name).ForEach(func(k, v []byte) error { kt += len(k) + len(v); return nil })
		}
		_ = tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error { cards += len(k) + len(v); return nil })
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return kt, cards
}

// BenchmarkAppendLog measures appending 10,000 card events to the key transparency log
// and publishing their checkpoint (one transaction: the entries, the log's nodes, the
// map's nodes and values, the signed checkpoint, and the fsync of the commit), on a
// log that already holds 100,000 entries and grows by 10,000 each iteration. The
// baseline, in the same run, is writing the same 10,000 events to the card event feed
// in one transaction: what the card store itself writes for them. It reports the
// bytes the key transparency buckets hold per entry, next to the bytes of the events
// themselves, and the file's growth per entry.
func BenchmarkAppendLog(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "card.db")
	store, err := OpenBoltStore(path)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	srv, err := New(store, Config{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var next uint64
	const batch = 10_000
	for range 10 {
		benchEvents(b, store, "app_bench", &next, batch)
	}
	if _, err := srv.PublishCheckpoint(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("feed-baseline", func(b *testing.B) {
		// Its own file, so that the log's file is not grown by it.
		base, err := OpenBoltStore(filepath.Join(b.TempDir(), "card.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer base.Close()
		var n uint64
		for b.Loop() {
			benchEvents(b, base, "app_bench", &n, batch)
		}
	})
	b.Run("append-and-checkpoint", func(b *testing.B) {
		before, _ := os.Stat(path)
		entriesBefore := next
		for b.Loop() {
			b.StopTimer()
			benchEvents(b, store, "app_bench", &next, batch)
			b.StartTimer()
			cp, err := srv.PublishCheckpoint(ctx)
			if err != nil || cp.GetSize() != next {
				b.Fatalf("checkpoint of %d entries, want %d: %v", cp.GetSize(), next, err)
			}
		}
		after, _ := os.Stat(path)
		ktb, evb := ktBytes(b, store)
		b.ReportMetric(float64(ktb)/float64(next), "kt-bytes/entry")
		b.ReportMetric(float64(evb)/float64(next), "event-bytes/entry")
		b.ReportMetric(float64(after.Size()-before.Size())/float64(next-entriesBefore), "file-bytes/entry")
	})
}
