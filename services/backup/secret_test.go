package backup

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umbra-e2ee/umbra/internal/clocktest"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
)

// TestDatabaseHoldsNoSecret: a copy of backup.db holds neither the server secret nor
// any OPRF key (private key or seed) of any record it protects, nor any auth key.
func TestDatabaseHoldsNoSecret(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t)
	users := []user{e.newUser(t, a, "alice"), e.newUser(t, a, "bob")}
	var authKeys [][]byte
	for _, u := range users {
		for _, slot := range []backupv1.BackupSlot{password, recovery} {
			e.mustBackUp(t, u, slot, "first "+u.identity, 0)
			e.mustBackUp(t, u, slot, "second "+u.identity, 1)
			ev, out, err := e.evaluate(t, u, slot, forRestore, "second "+u.identity)
			if err != nil {
				t.Fatal(err)
			}
			authKeys = append(authKeys, authKey(out))
			if _, err := e.client.Restore(u.ctx(), &backupv1.RestoreRequest{Slot: slot, AuthKey: authKey(out), ExpectedVersion: ev.GetOprfKeyVersion()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// An erasure too, so the outbox has held an event.
	for range DefaultMaxAttempts {
		_, _ = e.restore(t, users[0], password, "wrong")
	}
	if e.info(t, users[0], password) != nil {
		t.Fatal("the password slot was not erased")
	}
	waitOutboxEmpty(t, e)
	e.stop()

	file, err := os.ReadFile(filepath.Join(e.dir, "backup.db"))
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte(testSecret)
	mustNotContain := map[string][]byte{
		"the server secret":             secret,
		"half of the server secret":     secret[:len(secret)/2],
		"the server secret's last half": secret[len(secret)/2:],
	}
	for i, k := range authKeys {
		mustNotContain["auth key "+string(rune('0'+i))] = k
	}
	for _, u := range users {
		for _, slot := range []uint32{1, 2} {
			for version := uint64(1); version <= 3; version++ {
				ref := keyRef{app: a.id, identity: u.identity, slot: slot, version: version}
				priv, err := derivePrivate(secret, ref)
				if err != nil {
					t.Fatal(err)
				}
				b, err := priv.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				le := bytes.Clone(b) // the scalar as stored, and reversed in case of another byte order
				for i, j := 0, len(le)-1; i < j; i, j = i+1, j-1 {
					le[i], le[j] = le[j], le[i]
				}
				seed, err := hkdf.Key(sha256.New, secret, nil, string(seedInfo(ref)), 32)
				if err != nil {
					t.Fatal(err)
				}
				name := u.identity + "/" + slotName(slot) + "/v" + string(rune('0'+version))
				mustNotContain["OPRF private key of "+name] = b
				mustNotContain["reversed OPRF private key of "+name] = le
				mustNotContain["OPRF seed of "+name] = seed
			}
		}
	}
	for what, b := range mustNotContain {
		if bytes.Contains(file, b) {
			t.Errorf("backup.db contains %s", what)
		}
	}
	// What it does hold: the check value, and the records (the proof that the scan
	// looked at a file with data in it).
	if !bytes.Contains(file, secretCheck(secret)) {
		t.Error("backup.db lacks the secret's check value")
	}
	if !bytes.Contains(file, []byte("sealed bundle of second "+users[1].identity)) {
		t.Error("backup.db lacks a stored ciphertext: the scan read the wrong file")
	}
}

// TestSecretChecks: a missing, short or different server secret is refused at start,
// with a message that says what to do; the right one starts again and restores.
func TestSecretChecks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := clocktest.New(time.Now().Truncate(time.Second))
	e := newEnv(t, envOptions{dir: dir, clock: clk})
	alice := e.backedUpAlice(t, password, "right")
	e.stop()

	store, err := OpenBoltStore(filepath.Join(dir, "backup.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, tc := range []struct {
		name   string
		secret []byte
		msg    string
	}{
		{"missing", nil, "no server secret: the backup service needs one of at least 32 bytes"},
		{"short", []byte("too short a secret"), "the server secret is 18 bytes; at least 32 are required"},
		{"different", []byte(strings.ToUpper(testSecret)), "the server secret is not the one the backup store (backup.db, or the schema umbra_backup) was created with"},
		{"one more byte", []byte(testSecret + "!"), "the server secret is not the one the backup store (backup.db, or the schema umbra_backup) was created with"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(store, nil, Config{Secret: tc.secret}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v; want %q", err, tc.msg)
			}
		})
	}
	if _, err := New(store, nil, Config{Secret: []byte(testSecret), MaxAttempts: -1}, nil); err == nil {
		t.Fatal("a negative attempt budget was accepted")
	}
	store.Close()

	e = newEnv(t, envOptions{dir: dir, clock: clk})
	if _, err := e.restore(t, alice, password, "right"); err != nil {
		t.Fatalf("restore after a restart with the right secret: %v", err)
	}
}

// TestOutboxSurvivesRestart: an erasure while no messaging service is reachable
// keeps its event in backup.db; a later start delivers it, once.
func TestOutboxSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := clocktest.New(time.Now().Truncate(time.Second))
	e := newEnv(t, envOptions{dir: dir, clock: clk, noEvents: true, cfg: Config{MaxAttempts: 1}})
	alice := e.backedUpAlice(t, recovery, "right")
	_, err := e.restore(t, alice, recovery, "wrong")
	wantCode(t, err, codes.PermissionDenied, "was erased")
	pending, err := e.store.Outbox(10)
	if err != nil || len(pending) != 1 {
		t.Fatalf("outbox: %v, %v", pending, err)
	}
	ev := pending[0]
	var be backupv1.BackupEvent
	if err := proto.Unmarshal(ev.GetPayload(), &be); err != nil {
		t.Fatal(err)
	}
	if ev.GetAppId() != alice.app.id || ev.GetIdentity() != alice.identity || ev.GetType() != eventType ||
		be.GetKind() != backupv1.BackupEventKind_BACKUP_EVENT_KIND_ERASED || be.GetSlot() != recovery || be.GetVersion() != 1 {
		t.Fatalf("outbox event %v: %v", ev, &be)
	}
	e.stop()

	e = newEnv(t, envOptions{dir: dir, clock: clk})
	s := e.subscribe(t, alice)
	it := s.next(t)
	if it.GetEvent().GetEventId() != ev.GetEventId() || !bytes.Equal(it.GetEvent().GetPayload(), ev.GetPayload()) {
		t.Fatalf("delivered %v, want event %s", it, ev.GetEventId())
	}
	waitOutboxEmpty(t, e)
	// Delivered once: a publish of the same event again is a duplicate.
	if err := e.srv.publish(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	select {
	case it := <-s.Items:
		if it.GetHeartbeat() == nil {
			t.Fatalf("a second delivery: %v", it)
		}
	case <-time.After(200 * time.Millisecond):
	}
}

// TestOutboxRetries: an event the messaging service cannot take yet stays in the
// outbox and is delivered once it can, without a restart.
func TestOutboxRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{lateEvents: true, cfg: Config{MaxAttempts: 1}})
	alice := e.backedUpAlice(t, password, "right")
	s := e.subscribe(t, alice)
	_, err := e.restore(t, alice, password, "wrong")
	wantCode(t, err, codes.PermissionDenied, "was erased")
	time.Sleep(300 * time.Millisecond)
	if pending, err := e.store.Outbox(10); err != nil || len(pending) != 1 {
		t.Fatalf("before the messaging service answers, the outbox holds %v (%v)", pending, err)
	}
	e.serveEvents()
	if it := s.next(t); it.GetEvent().GetType() != eventType {
		t.Fatalf("stream item %v", it)
	}
	waitOutboxEmpty(t, e)
}
