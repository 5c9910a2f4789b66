package backup

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	backupstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/backup/v1"
)

func openTestStore(t *testing.T) *BoltStore {
	t.Helper()
	s, err := OpenBoltStore(filepath.Join(t.TempDir(), "backup.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestStoreUpdateSlot: an update's change and its answer both apply; an answer
// without a change writes nothing; events get increasing sequences in the outbox.
func TestStoreUpdateSlot(t *testing.T) {
	t.Parallel()
	s := openTestStore(t)
	rec, err := s.Slot("app_a", "u_a", 1)
	if err != nil || rec.GetAppId() != "app_a" || rec.GetIdentity() != "u_a" || rec.GetSlot() != 1 || rec.GetLatestVersion() != 0 || rec.GetBackup() != nil {
		t.Fatalf("a fresh slot: %v, %v", rec, err)
	}
	refusal := errs.Permissionf("refused")
	for i := range 3 {
		out, err := s.UpdateSlot("app_a", "u_a", 1, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
			r.LatestVersion++
			return Change{Write: true, Event: &backupstoragev1.BackupOutboxRecord{AppId: "app_a", Identity: "u_a", EventId: "e"}}, refusal
		})
		if !errors.Is(err, refusal) || out.GetLatestVersion() != uint64(i+1) {
			t.Fatalf("update %d: %v, %v", i, out, err)
		}
	}
	// A refusal without a change writes nothing, whatever it did to the record.
	_, err = s.UpdateSlot("app_a", "u_a", 1, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
		r.LatestVersion = 99
		return Change{}, errs.Conflictf("no")
	})
	if !errors.Is(err, errs.ErrConflict) {
		t.Fatal(err)
	}
	if rec, _ := s.Slot("app_a", "u_a", 1); rec.GetLatestVersion() != 3 {
		t.Fatalf("latest version %d, want 3", rec.GetLatestVersion())
	}
	events, err := s.Outbox(10)
	if err != nil || len(events) != 3 {
		t.Fatalf("outbox %v, %v", events, err)
	}
	for i, ev := range events {
		if ev.GetSequence() != uint64(i+1) {
			t.Errorf("event %d has sequence %d", i, ev.GetSequence())
		}
	}
	if got, _ := s.Outbox(2); len(got) != 2 {
		t.Errorf("Outbox(2) gave %d", len(got))
	}
	if err := s.DeleteOutbox(2); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteOutbox(2); err != nil {
		t.Fatalf("deleting a deleted event: %v", err)
	}
	if got, _ := s.Outbox(10); len(got) != 2 || got[0].GetSequence() != 1 || got[1].GetSequence() != 3 {
		t.Fatalf("after delete: %v", got)
	}
}

// TestStoreSlots: an identity's slots, in order, and nobody else's: not another
// identity's, not another app's, not one whose id starts with this one's.
func TestStoreSlots(t *testing.T) {
	t.Parallel()
	s := openTestStore(t)
	write := func(app, identity string, slot uint32) {
		t.Helper()
		_, err := s.UpdateSlot(app, identity, slot, func(r *backupstoragev1.BackupSlotRecord) (Change, error) {
			r.LatestVersion = 1
			return Change{Write: true}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	write("app_a", "u_a", 2)
	write("app_a", "u_a", 1)
	write("app_a", "u_ab", 1)
	write("app_a", "u_", 1)
	write("app_b", "u_a", 1)
	got, err := s.Slots("app_a", "u_a")
	if err != nil || len(got) != 2 || got[0].GetSlot() != 1 || got[1].GetSlot() != 2 {
		t.Fatalf("slots %v, %v", got, err)
	}
	for _, r := range got {
		if r.GetAppId() != "app_a" || r.GetIdentity() != "u_a" {
			t.Errorf("someone else's slot %v", r)
		}
	}
	if got, _ := s.Slots("app_c", "u_a"); len(got) != 0 {
		t.Errorf("another app's identity has slots %v", got)
	}
}

// TestStoreSecretCheck: the first value is kept; later calls return it.
func TestStoreSecretCheck(t *testing.T) {
	t.Parallel()
	s := openTestStore(t)
	if _, err := s.SecretCheck(nil); !errors.Is(err, errNoSecretHere) {
		t.Fatalf("no candidate on an empty file: %v", err)
	}
	first, err := s.SecretCheck([]byte("first"))
	if err != nil || string(first) != "first" {
		t.Fatalf("%q, %v", first, err)
	}
	again, err := s.SecretCheck([]byte("second"))
	if err != nil || !bytes.Equal(again, first) {
		t.Fatalf("%q, %v", again, err)
	}
}
