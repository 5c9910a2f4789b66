package msgstore

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// The Store's behaviour is tested over both engines by the messaging service's
// conformance suite (services/messaging/store_conformance_test.go); the tests here
// are of the bbolt engine's own mechanisms (its file, its replay).

const testApp = "app_aaaaaaaaaaaaaaaaaaaaaaaaaa"

func openTestStore(t *testing.T, opts Options) *BoltStore {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "messaging.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testIdentity is an identity of no one in particular: the store takes ids as the
// service checked them.
func testIdentity(i int) string { return fmt.Sprintf("u_%032d", i) }

// directID stands for the service's id of the direct conversation of a and b in app
// (a hash of them): the store takes conversation ids as given.
func directID(app, a, b string) string {
	p := sortedPair(a, b)
	return "d_" + app + "_" + p[0] + "_" + p[1]
}

func sortedPair(a, b string) []string {
	if b < a {
		a, b = b, a
	}
	return []string{a, b}
}

// directOp is a message from sender to peer.
func directOp(sender, peer, cmid, body string) *Op {
	return &Op{Send: &SendOp{
		AppID: testApp, Sender: sender, ConversationID: directID(testApp, sender, peer), Kind: kindDirect,
		ClientMessageID: cmid, MessageKind: messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_PLAINTEXT,
		Envelope: []byte(body), Recipients: sortedPair(sender, peer),
	}}
}

func storeSnapshot(t *testing.T, s *BoltStore) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := s.DB().View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			out[string(name)+"#sequence"] = strconv.FormatUint(b.Sequence(), 10)
			return b.ForEach(func(k, v []byte) error {
				out[string(name)+"/"+string(k)] = string(v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestApplyStorageErrorFailsTheBatch: a storage failure fails every op of the batch and
// commits nothing, neither in the file nor in memory: the next batch numbers from
// where the last committed one stopped.
func TestApplyStorageErrorFailsTheBatch(t *testing.T) {
	s := openTestStore(t, Options{FlushEntries: 1}) // index entries written in the same transaction
	alice, bob := testIdentity(1), testIdentity(2)
	if err := s.Apply(&Batch{Now: time.Now(), Retention: time.Hour, Ops: []*Op{directOp(alice, bob, "m0", "first")}}); err != nil {
		t.Fatal(err)
	}
	before := storeSnapshot(t, s)
	// bbolt refuses keys over 32 KiB: the event's index entry fails the transaction.
	poison := &Op{Event: &EventOp{AppID: testApp, EventID: strings.Repeat("e", 40<<10), Type: "t.T", Recipients: []string{bob}}}
	ops := []*Op{directOp(alice, bob, "m1", "one"), poison, directOp(bob, alice, "m2", "two")}
	err := s.Apply(&Batch{Now: time.Now(), Retention: time.Hour, Ops: ops})
	if !errors.Is(err, bolterrors.ErrKeyTooLarge) {
		t.Fatalf("Apply: %v, want the storage error", err)
	}
	for i, op := range ops {
		if op.Err != nil {
			t.Errorf("op %d has its own error %v; the batch's error is every op's", i, op.Err)
		}
	}
	if !maps.Equal(before, storeSnapshot(t, s)) {
		t.Error("the failed batch changed the file")
	}
	if head, err := s.InboxHead(testApp, bob); err != nil || head != 1 {
		t.Errorf("bob's inbox ends at %d (%v) after the failed batch, want 1", head, err)
	}
	retry := []*Op{directOp(alice, bob, "m1", "one"), directOp(bob, alice, "m2", "two")}
	if err := s.Apply(&Batch{Now: time.Now(), Retention: time.Hour, Ops: retry}); err != nil {
		t.Fatal(err)
	}
	if retry[0].Send.Sequence != 2 || retry[1].Send.Sequence != 3 || retry[0].Send.Duplicate {
		t.Errorf("after the failed batch: sequences %d and %d, want 2 and 3", retry[0].Send.Sequence, retry[1].Send.Sequence)
	}
}

// TestReplayIsIdempotent: indexing log entries a second time (a crash after a flush
// committed but before memory said so) changes nothing.
func TestReplayIsIdempotent(t *testing.T) {
	s := openTestStore(t, Options{FlushEntries: 1})
	alice, bob := testIdentity(1), testIdentity(2)
	for i := range 5 {
		if err := s.Apply(&Batch{Now: time.Now(), Retention: time.Hour, Ops: []*Op{directOp(alice, bob, strconv.Itoa(i), "x")}}); err != nil {
			t.Fatal(err)
		}
	}
	before := storeSnapshot(t, s)
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketIndexState).Put(keyIndexedThrough, make([]byte, 8)); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.replay(); err != nil {
		t.Fatal(err)
	}
	if after := storeSnapshot(t, s); !maps.Equal(before, after) {
		t.Error("indexing the log again changed the indexes")
	}
}
