package backup

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/pgtest"
	"github.com/umbra-e2ee/umbra/internal/storecopy/copytest"
	backupstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/backup/v1"
)

// fillBolt writes every record kind of backup.db through the Store: the secret's check,
// slots with spent attempts, and an outbox whose first event was delivered.
func fillBolt(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.db")
	s, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.SecretCheck([]byte("check-1")); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"u_a", "u_b", "u_c"} {
		for slot := uint32(0); slot < 2; slot++ {
			_, err := s.UpdateSlot("app", id, slot, func(rec *backupstoragev1.BackupSlotRecord) (Change, error) {
				rec.LatestVersion = uint64(i + 1)
				rec.RemainingAttempts = 10 - uint32(i) - slot
				rec.Backup = &backupstoragev1.BackupStoredRecord{Ciphertext: []byte(id)}
				return Change{Write: true, Event: &backupstoragev1.BackupOutboxRecord{AppId: "app", Identity: id, EventId: fmt.Sprint(id, slot)}}, nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.DeleteOutbox(1); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCopyBoltToPostgres(t *testing.T) {
	path := fillBolt(t)
	pg := openPostgres(t, pgtest.NewDatabase(t).URL)
	res := copytest.Copy(t, BoltCopier(pg), path)
	want := map[string]int{"backup_slots": 6, "backup_outbox": 5, "backup_outbox.sequence": 1, "backup_server": 1}
	if got := copytest.Kinds(res); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("copied %v, want %v", got, want)
	}
	src, err := OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"u_a", "u_b", "u_c"} {
		a, _ := src.Slots("app", id)
		b, err := pg.Slots("app", id)
		if err != nil || len(a) != len(b) || !proto.Equal(a[0], b[0]) || !proto.Equal(a[1], b[1]) {
			t.Errorf("Slots(%s): %v %v, want %v", id, b, err, a)
		}
	}
	o1, _ := src.Outbox(100)
	o2, err := pg.Outbox(100)
	if err != nil || len(o1) != len(o2) || !proto.Equal(o1[0], o2[0]) {
		t.Errorf("Outbox: %v %v, want %v", o2, err, o1)
	}
	// The secret's check value is the file's: a server started with another secret is
	// refused as before.
	if check, err := pg.SecretCheck([]byte("check-2")); err != nil || !bytes.Equal(check, []byte("check-1")) {
		t.Errorf("SecretCheck: %q %v", check, err)
	}
	// The attempt budget goes on where it was, and the next event follows the file's.
	got, err := pg.UpdateSlot("app", "u_c", 1, func(rec *backupstoragev1.BackupSlotRecord) (Change, error) {
		rec.RemainingAttempts--
		return Change{Write: true, Event: &backupstoragev1.BackupOutboxRecord{AppId: "app", Identity: "u_c", EventId: "after"}}, nil
	})
	if err != nil || got.GetRemainingAttempts() != 6 {
		t.Errorf("UpdateSlot after the copy: %d attempts left (%v), want 6", got.GetRemainingAttempts(), err)
	}
	o2, _ = pg.Outbox(100)
	if last := o2[len(o2)-1]; last.GetEventId() != "after" || last.GetSequence() != 7 {
		t.Errorf("the event after the copy has sequence %d, want 7", last.GetSequence())
	}
	src.Close()
	// A second run finds the schema changed since, and refuses naming the kinds.
	_, err = BoltCopier(pg).Copy(context.Background(), path)
	copytest.WantDifferences(t, "copy over a changed schema", err, "backup_slots", "backup_outbox", "backup_outbox.sequence")
}

func TestCopyInterruptedThenRerun(t *testing.T) {
	path := fillBolt(t)
	db := pgtest.NewDatabase(t)
	pg := openPostgres(t, db.URL)
	copytest.InterruptedThenRerun(t, db, BoltCopier(pg), path, "umbra_backup.slots")
	db.Exec(t, "UPDATE umbra_backup.server_state SET value = 'other'")
	_, err := BoltCopier(pg).Verify(context.Background(), path)
	copytest.WantDifferences(t, "verify a changed check value", err, "backup_server")
}
