package msgstore

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// TestDamagedIndexEntryIsRefused: an index entry (which carries no checksum) damaged to
// point at another conversation's message is refused, not served as this one's.
func TestDamagedIndexEntryIsRefused(t *testing.T) {
	s := openTestStore(t, Options{})
	alice, bob, carol := testIdentity(1), testIdentity(2), testIdentity(3)
	b := &Batch{Now: time.Now(), Retention: time.Hour, Ops: []*Op{directOp(alice, bob, "m1", "to bob"), directOp(alice, carol, "m1c", "to carol, private")}}
	if err := s.Apply(b); err != nil {
		t.Fatal(err)
	}
	if err := s.FlushAll(); err != nil {
		t.Fatal(err)
	}
	toBob, toCarol := directID(testApp, alice, bob), directID(testApp, alice, carol)
	// Bob's first message, and his first inbox item, point at carol's message instead.
	err := s.DB().Update(func(tx *bolt.Tx) error {
		idx, inbox := tx.Bucket(bucketMessages), tx.Bucket(bucketInbox)
		carols := bytes.Clone(idx.Get(seqKey(key2(testApp, toCarol), 1)))
		if err := idx.Put(seqKey(key2(testApp, toBob), 1), carols); err != nil {
			return err
		}
		return inbox.Put(seqKey(key2(testApp, bob), 1), carols)
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := s.Messages(testApp, toBob, MessageQuery{Forward: true, Limit: 10, MaxBytes: 1 << 20})
	if !errors.Is(err, errs.ErrDamaged) {
		t.Fatalf("Messages: %v (%d messages: %q), want ErrDamaged", err, len(got), got)
	}
	items, _, err := s.Inbox(testApp, bob, 0, 10, 1<<20)
	if !errors.Is(err, errs.ErrDamaged) {
		t.Fatalf("Inbox: %v (%d items), want ErrDamaged", err, len(items))
	}
	path := s.DB().Path()
	_, err = Verify(path)
	if !errors.Is(err, boltdb.ErrLocked) {
		t.Fatalf("Verify of an open store: %v, want ErrLocked", err)
	}
	s.Close()
	r, err := Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Problems, "; "); len(r.Problems) != 2 || !strings.Contains(got, "messages: entry") || !strings.Contains(got, "inbox: entry") {
		t.Errorf("Verify: %q, want the damaged messages and inbox entries", r.Problems)
	}
}
