package backup

import (
	"bytes"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/servicetest"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

const (
	password   = backupv1.BackupSlot_BACKUP_SLOT_PASSWORD
	recovery   = backupv1.BackupSlot_BACKUP_SLOT_RECOVERY
	forBackup  = backupv1.EvaluationPurpose_EVALUATION_PURPOSE_BACKUP
	forRestore = backupv1.EvaluationPurpose_EVALUATION_PURPOSE_RESTORE
)

// TestBackupAndRestore: the whole client flow, in both slots, and what GetBackupInfo
// says about it.
func TestBackupAndRestore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice := e.newUser(t, e.newApp(t), "alice")

	if got := e.info(t, alice, password); got != nil {
		t.Fatalf("a new identity has a backup: %v", got)
	}
	stored := e.mustBackUp(t, alice, password, "correct horse", 0)
	if stored.GetVersion() != 1 || stored.GetRemainingAttempts() != DefaultMaxAttempts || stored.GetMaxAttempts() != DefaultMaxAttempts ||
		stored.GetSlot() != password || stored.GetAead() != backupv1.BackupAead_BACKUP_AEAD_CHACHA20_POLY1305 ||
		!stored.GetUpdatedAt().AsTime().Equal(e.clock.Now()) {
		t.Fatalf("stored: %v", stored)
	}
	e.mustBackUp(t, alice, recovery, "ABCD-EFGH-recovery", 0)

	resp, err := e.restore(t, alice, password, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	want := testRecord("correct horse", nil)
	if !bytes.Equal(resp.GetCiphertext(), want.GetCiphertext()) || !bytes.Equal(resp.GetNonce(), want.GetNonce()) ||
		resp.GetAead() != want.GetAead() || !proto.Equal(resp.GetKdf(), want.GetKdf()) || resp.GetVersion() != 1 {
		t.Fatalf("restored %v", resp)
	}
	resp, err = e.restore(t, alice, recovery, "ABCD-EFGH-recovery")
	if err != nil || !bytes.HasPrefix(resp.GetCiphertext(), []byte("sealed bundle of ABCD-EFGH-recovery")) {
		t.Fatalf("restore of the recovery slot: %v, %v", resp, err)
	}

	infos, err := e.client.GetBackupInfo(alice.ctx(), &backupv1.GetBackupInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(infos.GetBackups()) != 2 || infos.GetBackups()[0].GetSlot() != password || infos.GetBackups()[1].GetSlot() != recovery {
		t.Fatalf("infos: %v", infos)
	}
	for _, b := range infos.GetBackups() {
		if b.GetRemainingAttempts() != DefaultMaxAttempts || b.GetCiphertextSize() == 0 || len(b.GetKdf().GetSalt()) != 16 {
			t.Errorf("info %v", b)
		}
	}
}

// TestChangePassword: restore with the old password, then back up under the new one
// over the restored version; the old password no longer opens anything.
func TestChangePassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice := e.backedUpAlice(t, password, "old password")

	restored, err := e.restore(t, alice, password, "old password")
	if err != nil {
		t.Fatal(err)
	}
	ev, out, err := e.evaluate(t, alice, password, forBackup, "new password")
	if err != nil {
		t.Fatal(err)
	}
	if ev.GetOprfKeyVersion() != 2 || ev.GetRemainingAttempts() != 0 {
		t.Fatalf("BACKUP evaluation: version %d, remaining %d", ev.GetOprfKeyVersion(), ev.GetRemainingAttempts())
	}
	put, err := e.client.PutBackup(alice.ctx(), &backupv1.PutBackupRequest{
		Slot: password, Record: testRecord("new password", authKey(out)), ExpectedVersion: restored.GetVersion(), OprfKeyVersion: ev.GetOprfKeyVersion(),
	})
	if err != nil || put.GetBackup().GetVersion() != 2 {
		t.Fatalf("put of the new password: %v, %v", put, err)
	}

	_, err = e.restore(t, alice, password, "old password")
	wantCode(t, err, codes.PermissionDenied, "9 attempts remain")
	resp, err := e.restore(t, alice, password, "new password")
	if err != nil || !bytes.HasPrefix(resp.GetCiphertext(), []byte("sealed bundle of new password")) || resp.GetVersion() != 2 {
		t.Fatalf("restore with the new password: %v, %v", resp, err)
	}
	// A second device that still thinks version 1 is stored loses.
	_, err = e.backUp(t, alice, password, "third password", 1)
	wantCode(t, err, codes.Aborted, "holds version 2, not 1")
}

// TestWrongPasswordsEraseTheSlot: every wrong password costs one attempt and says how
// many remain; the last one erases the slot and the owner hears of it in its stream.
func TestWrongPasswordsEraseTheSlot(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t)
	alice := e.newUser(t, a, "alice")
	e.mustBackUp(t, alice, password, "right", 0)
	e.mustBackUp(t, alice, recovery, "recovery key", 0)
	stream := e.subscribe(t, alice)

	for left := DefaultMaxAttempts - 1; left > 0; left-- {
		ev, out, err := e.evaluate(t, alice, password, forRestore, fmt.Sprintf("guess %d", left))
		if err != nil {
			t.Fatalf("evaluation with %d left: %v", left+1, err)
		}
		if ev.GetRemainingAttempts() != uint32(left) || ev.GetOprfKeyVersion() != 1 {
			t.Fatalf("evaluation: remaining %d version %d; want %d, 1", ev.GetRemainingAttempts(), ev.GetOprfKeyVersion(), left)
		}
		_, err = e.client.Restore(alice.ctx(), &backupv1.RestoreRequest{Slot: password, AuthKey: authKey(out), ExpectedVersion: 1})
		wantCode(t, err, codes.PermissionDenied, fmt.Sprintf("wrong auth key for the password slot (wrong password or recovery key): %d attempt", left))
		if f := failureOf(err); f == nil || f.GetRemainingAttempts() != uint32(left) || f.GetErased() {
			t.Fatalf("detail with %d left: %v", left, f)
		}
		if got := e.info(t, alice, password).GetRemainingAttempts(); got != uint32(left) {
			t.Fatalf("GetBackupInfo says %d remain, want %d", got, left)
		}
	}
	_, err := e.restore(t, alice, password, "last guess")
	wantCode(t, err, codes.PermissionDenied, "no attempt left: the backup (version 1) was erased")
	if f := failureOf(err); f == nil || f.GetRemainingAttempts() != 0 || !f.GetErased() {
		t.Fatalf("detail of the erasure: %v", f)
	}

	// The slot is empty; even the right password finds nothing.
	if got := e.info(t, alice, password); got != nil {
		t.Fatalf("erased slot still described: %v", got)
	}
	_, err = e.restore(t, alice, password, "right")
	wantCode(t, err, codes.NotFound, "holds no backup")
	_, err = e.client.DeleteBackup(alice.ctx(), &backupv1.DeleteBackupRequest{Slot: password})
	wantCode(t, err, codes.NotFound, "holds no backup")
	// The other slot is untouched.
	if _, err := e.restore(t, alice, recovery, "recovery key"); err != nil {
		t.Fatalf("the recovery slot after the password slot was erased: %v", err)
	}

	it := stream.next(t)
	ev := it.GetEvent()
	if ev.GetType() != "umbra.backup.v1.BackupEvent" || ev.GetEventId() == "" {
		t.Fatalf("stream item %v", it)
	}
	var be backupv1.BackupEvent
	if err := proto.Unmarshal(ev.GetPayload(), &be); err != nil {
		t.Fatal(err)
	}
	if be.GetKind() != backupv1.BackupEventKind_BACKUP_EVENT_KIND_ERASED || be.GetSlot() != password || be.GetVersion() != 1 ||
		!be.GetOccurredAt().AsTime().Equal(e.clock.Now()) {
		t.Fatalf("event %v", &be)
	}
	waitOutboxEmpty(t, e)

	// The version counter survives: a new backup is version 2, under a new key.
	if got := e.mustBackUp(t, alice, password, "right", 0); got.GetVersion() != 2 || got.GetRemainingAttempts() != DefaultMaxAttempts {
		t.Fatalf("backup after the erasure: %v", got)
	}
}

// TestRestoreWithoutEvaluation: replaying an auth key without an evaluation costs an
// attempt too.
func TestRestoreWithoutEvaluation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{MaxAttempts: 2}})
	alice := e.backedUpAlice(t, password, "right")
	stale := bytes.Repeat([]byte{7}, AuthKeySize)
	_, err := e.client.Restore(alice.ctx(), &backupv1.RestoreRequest{Slot: password, AuthKey: stale, ExpectedVersion: 1})
	wantCode(t, err, codes.PermissionDenied, "1 attempt remains")
	_, err = e.client.Restore(alice.ctx(), &backupv1.RestoreRequest{Slot: password, AuthKey: stale, ExpectedVersion: 1})
	wantCode(t, err, codes.PermissionDenied, "was erased")
	if f := failureOf(err); !f.GetErased() {
		t.Fatalf("detail %v", f)
	}
}

// TestEvaluationsSpendTheBudget: RESTORE evaluations spend the budget up front; the
// guesses they paid for may still be presented, and an evaluation with none left
// erases the slot.
func TestEvaluationsSpendTheBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{MaxAttempts: 3}})
	alice := e.backedUpAlice(t, password, "right")
	var outs [][]byte
	for want := 2; want >= 0; want-- {
		ev, out, err := e.evaluate(t, alice, password, forRestore, fmt.Sprintf("guess %d", want))
		if err != nil || ev.GetRemainingAttempts() != uint32(want) {
			t.Fatalf("evaluation: %v, %v; want %d remaining", ev, err, want)
		}
		outs = append(outs, out)
	}
	// The guesses already paid for fail without spending more, until the last.
	_, err := e.client.Restore(alice.ctx(), &backupv1.RestoreRequest{Slot: password, AuthKey: authKey(outs[0]), ExpectedVersion: 1})
	wantCode(t, err, codes.PermissionDenied, "0 attempts remain before the backup is erased, besides 2 evaluations")
	if f := failureOf(err); f.GetRemainingAttempts() != 0 || f.GetErased() {
		t.Fatalf("detail %v", f)
	}
	// One more evaluation, with none left, erases.
	_, _, err = e.evaluate(t, alice, password, forRestore, "one more")
	wantCode(t, err, codes.PermissionDenied, "no attempt left in the password slot's budget: the backup (version 1) was erased")
	if f := failureOf(err); f == nil || !f.GetErased() {
		t.Fatalf("detail %v", f)
	}
	_, _, err = e.evaluate(t, alice, password, forRestore, "after")
	wantCode(t, err, codes.NotFound, "holds no backup")
	waitOutboxEmpty(t, e)
}

// TestMatchingRestoreResetsBudget: the right password restores the full budget, and
// so does a new backup.
func TestMatchingRestoreResetsBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice := e.backedUpAlice(t, password, "right")
	for i := range 3 {
		_, err := e.restore(t, alice, password, fmt.Sprintf("wrong %d", i))
		wantCode(t, err, codes.PermissionDenied, "wrong auth key")
	}
	// An evaluation never followed by a Restore is spent too.
	if _, _, err := e.evaluate(t, alice, password, forRestore, "abandoned"); err != nil {
		t.Fatal(err)
	}
	if got := e.info(t, alice, password).GetRemainingAttempts(); got != DefaultMaxAttempts-4 {
		t.Fatalf("remaining %d, want %d", got, DefaultMaxAttempts-4)
	}
	if _, err := e.restore(t, alice, password, "right"); err != nil {
		t.Fatal(err)
	}
	if got := e.info(t, alice, password).GetRemainingAttempts(); got != DefaultMaxAttempts {
		t.Fatalf("remaining %d after a matching restore, want %d", got, DefaultMaxAttempts)
	}
	// A matching restore on a full budget writes nothing.
	ev, out, err := e.evaluate(t, alice, password, forRestore, "right")
	if err != nil {
		t.Fatal(err)
	}
	before := e.snapshot(t)
	if _, err := e.client.Restore(alice.ctx(), &backupv1.RestoreRequest{Slot: password, AuthKey: authKey(out), ExpectedVersion: ev.GetOprfKeyVersion()}); err != nil {
		t.Fatal(err)
	}
	after := e.snapshot(t)
	if maps.Equal(before, after) {
		t.Fatal("the restore after an evaluation did not give the attempt back")
	}
	if _, err := e.client.Restore(alice.ctx(), &backupv1.RestoreRequest{Slot: password, AuthKey: authKey(out), ExpectedVersion: ev.GetOprfKeyVersion()}); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(after, e.snapshot(t)) {
		t.Fatal("a matching restore on a full budget changed the store")
	}
	// A put resets it too.
	_, _ = e.restore(t, alice, password, "wrong again")
	if got := e.mustBackUp(t, alice, password, "new", 1); got.GetRemainingAttempts() != DefaultMaxAttempts {
		t.Fatalf("put left %d attempts", got.GetRemainingAttempts())
	}
}

// TestConcurrentPuts: devices racing to replace the same version: exactly one wins,
// the others get ABORTED.
func TestConcurrentPuts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice := e.newUser(t, e.newApp(t), "alice")
	for round, expected := range []uint64{0, 1} {
		const devices = 8
		reqs := make([]*backupv1.PutBackupRequest, devices)
		for i := range reqs {
			secret := fmt.Sprintf("device %d round %d", i, round)
			ev, out, err := e.evaluate(t, alice, password, forBackup, secret)
			if err != nil {
				t.Fatal(err)
			}
			reqs[i] = &backupv1.PutBackupRequest{Slot: password, Record: testRecord(secret, authKey(out)), ExpectedVersion: expected, OprfKeyVersion: ev.GetOprfKeyVersion()}
		}
		var wg sync.WaitGroup
		errs := make([]error, devices)
		for i := range reqs {
			wg.Go(func() { _, errs[i] = e.client.PutBackup(alice.ctx(), reqs[i]) })
		}
		wg.Wait()
		won := -1
		for i, err := range errs {
			switch {
			case err == nil && won >= 0:
				t.Fatalf("round %d: devices %d and %d both won", round, won, i)
			case err == nil:
				won = i
			default:
				wantCode(t, err, codes.Aborted, fmt.Sprintf("holds version %d, not %d", expected+1, expected))
			}
		}
		if won < 0 {
			t.Fatalf("round %d: nobody won", round)
		}
		secret := fmt.Sprintf("device %d round %d", won, round)
		if resp, err := e.restore(t, alice, password, secret); err != nil || resp.GetVersion() != expected+1 {
			t.Fatalf("round %d: restore of the winner: %v, %v", round, resp, err)
		}
	}
}

// TestOtherIdentities: everything acts for the token's identity; another identity
// (of the same app, or of another) sees, restores, evaluates and erases nothing of
// alice's.
func TestOtherIdentities(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	a := e.newApp(t)
	alice, bob := e.newUser(t, a, "alice"), e.newUser(t, a, "bob")
	mallory := e.newUser(t, e.newApp(t), "alice") // the same uid in another app
	e.mustBackUp(t, alice, password, "alice's password", 0)
	aliceBlind := blind(t, alice, password, "alice's password")
	aliceEval, err := e.client.Evaluate(alice.ctx(), &backupv1.EvaluateRequest{Slot: password, Purpose: forBackup, BlindedElement: aliceBlind.Element})
	if err != nil {
		t.Fatal(err)
	}
	before := e.snapshot(t)
	aliceInfo := e.info(t, alice, password)

	for _, other := range []user{bob, mallory} {
		infos, err := e.client.GetBackupInfo(other.ctx(), &backupv1.GetBackupInfoRequest{})
		if err != nil || len(infos.GetBackups()) != 0 {
			t.Fatalf("%s sees %v, %v", other.identity, infos, err)
		}
		_, err = e.client.Evaluate(other.ctx(), &backupv1.EvaluateRequest{Slot: password, Purpose: forRestore, BlindedElement: aliceBlind.Element})
		wantCode(t, err, codes.NotFound, "holds no backup")
		_, err = e.client.Restore(other.ctx(), &backupv1.RestoreRequest{Slot: password, AuthKey: bytes.Repeat([]byte{1}, 32), ExpectedVersion: 1})
		wantCode(t, err, codes.NotFound, "holds no backup")
		_, err = e.client.DeleteBackup(other.ctx(), &backupv1.DeleteBackupRequest{Slot: password})
		wantCode(t, err, codes.NotFound, "holds no backup")
		// Its own key, even for alice's blinded element at the same version.
		ev, err := e.client.Evaluate(other.ctx(), &backupv1.EvaluateRequest{Slot: password, Purpose: forBackup, BlindedElement: aliceBlind.Element})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(ev.GetPublicKey(), aliceEval.GetPublicKey()) || bytes.Equal(ev.GetEvaluatedElement(), aliceEval.GetEvaluatedElement()) {
			t.Fatalf("%s's evaluation used alice's key", other.identity)
		}
	}
	if !maps.Equal(before, e.snapshot(t)) {
		t.Fatal("other identities changed the store")
	}
	if got := e.info(t, alice, password); !proto.Equal(got, aliceInfo) {
		t.Fatalf("alice's backup changed: %v, was %v", got, aliceInfo)
	}
	if _, err := e.restore(t, alice, password, "alice's password"); err != nil {
		t.Fatal(err)
	}
	_, err = e.client.GetBackupInfo(as(""), &backupv1.GetBackupInfoRequest{})
	wantCode(t, err, codes.Unauthenticated, "")
	_, err = e.client.GetBackupInfo(as(a.key), &backupv1.GetBackupInfoRequest{})
	if code := status.Code(err); code != codes.Unauthenticated && code != codes.PermissionDenied {
		t.Fatalf("an app key got %v", err)
	}
}

// TestBackupKeyIsNotTheRestoreKey: a BACKUP evaluation uses the next version's key,
// so evaluating the same blinded element "for a backup" says nothing about the stored
// record; RESTORE evaluations of it are repeatable.
func TestBackupKeyIsNotTheRestoreKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice := e.backedUpAlice(t, password, "right")
	b := blind(t, alice, password, "right")
	req := func(p backupv1.EvaluationPurpose) *backupv1.EvaluateResponse {
		resp, err := e.client.Evaluate(alice.ctx(), &backupv1.EvaluateRequest{Slot: password, Purpose: p, BlindedElement: b.Element})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	forB, forR, again := req(forBackup), req(forRestore), req(forRestore)
	if forB.GetOprfKeyVersion() != 2 || forR.GetOprfKeyVersion() != 1 {
		t.Fatalf("versions: BACKUP %d, RESTORE %d", forB.GetOprfKeyVersion(), forR.GetOprfKeyVersion())
	}
	if bytes.Equal(forB.GetPublicKey(), forR.GetPublicKey()) || bytes.Equal(forB.GetEvaluatedElement(), forR.GetEvaluatedElement()) {
		t.Fatal("the BACKUP evaluation used the stored record's key")
	}
	if !bytes.Equal(forR.GetPublicKey(), again.GetPublicKey()) || !bytes.Equal(forR.GetEvaluatedElement(), again.GetEvaluatedElement()) {
		t.Fatal("two RESTORE evaluations of one element differ")
	}
	if bytes.Equal(forR.GetProof(), again.GetProof()) {
		t.Fatal("two proofs are equal: the prover's nonce is not random")
	}
	// Both verify, and only the RESTORE output opens the record.
	outB, outR := b.finish(t, forB), b.finish(t, forR)
	if bytes.Equal(outB, outR) {
		t.Fatal("equal outputs under different keys")
	}
	_, err := e.client.Restore(alice.ctx(), &backupv1.RestoreRequest{Slot: password, AuthKey: authKey(outB), ExpectedVersion: 1})
	wantCode(t, err, codes.PermissionDenied, "wrong auth key")
	if _, err := e.client.Restore(alice.ctx(), &backupv1.RestoreRequest{Slot: password, AuthKey: authKey(outR), ExpectedVersion: 1}); err != nil {
		t.Fatal(err)
	}
	// The other slot's key differs too.
	other, err := e.client.Evaluate(alice.ctx(), &backupv1.EvaluateRequest{Slot: recovery, Purpose: forBackup, BlindedElement: b.Element})
	if err != nil || other.GetOprfKeyVersion() != 1 || bytes.Equal(other.GetPublicKey(), forR.GetPublicKey()) {
		t.Fatalf("recovery slot evaluation: %v, %v", other, err)
	}
	// A proof does not verify against another key.
	swapped := proto.CloneOf(forR)
	swapped.PublicKey = forB.GetPublicKey()
	if _, err := b.Finish(swapped); err == nil {
		t.Fatal("a proof verified against the wrong public key")
	}
}

// TestVersionChecks: the compare-and-swap of PutBackup, Restore and DeleteBackup, and
// that a refused one changes nothing.
func TestVersionChecks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	alice := e.newUser(t, e.newApp(t), "alice")

	_, err := e.backUp(t, alice, password, "x", 1)
	wantCode(t, err, codes.Aborted, "holds no backup, but expected_version is 1: pass 0")
	e.mustBackUp(t, alice, password, "right", 0)

	_, err = e.backUp(t, alice, password, "x", 0)
	wantCode(t, err, codes.Aborted, "holds version 1, not 0")
	// A record derived under a stale key version (evaluated before another put).
	ev, out, err := e.evaluate(t, alice, password, forRestore, "right")
	if err != nil {
		t.Fatal(err)
	}
	before := e.snapshot(t)
	_, err = e.client.PutBackup(alice.ctx(), &backupv1.PutBackupRequest{Slot: password, Record: testRecord("x", authKey(out)), ExpectedVersion: 1, OprfKeyVersion: 1})
	wantCode(t, err, codes.Aborted, "derived under OPRF key version 1, but the password slot's next version is 2")
	_, err = e.client.PutBackup(alice.ctx(), &backupv1.PutBackupRequest{Slot: password, Record: testRecord("x", authKey(out)), ExpectedVersion: 1, OprfKeyVersion: 3})
	wantCode(t, err, codes.Aborted, "next version is 2")
	_, err = e.client.Restore(alice.ctx(), &backupv1.RestoreRequest{Slot: password, AuthKey: authKey(out), ExpectedVersion: 2})
	wantCode(t, err, codes.Aborted, "holds version 1, not 2: evaluate (RESTORE) again; no attempt was spent")
	_, err = e.client.DeleteBackup(alice.ctx(), &backupv1.DeleteBackupRequest{Slot: password, ExpectedVersion: 2})
	wantCode(t, err, codes.Aborted, "holds version 1, not 2")
	if !maps.Equal(before, e.snapshot(t)) {
		t.Fatal("a refused request changed the store")
	}
	if _, err := e.client.Restore(alice.ctx(), &backupv1.RestoreRequest{Slot: password, AuthKey: authKey(out), ExpectedVersion: ev.GetOprfKeyVersion()}); err != nil {
		t.Fatal(err)
	}

	// Delete (reset): the version counter stays, and no event is sent for it.
	if _, err := e.client.DeleteBackup(alice.ctx(), &backupv1.DeleteBackupRequest{Slot: password, ExpectedVersion: 1}); err != nil {
		t.Fatal(err)
	}
	if e.info(t, alice, password) != nil {
		t.Fatal("deleted backup still described")
	}
	if pending, err := e.store.Outbox(10); err != nil || len(pending) != 0 {
		t.Fatalf("a delete queued events: %v, %v", pending, err)
	}
	ev, _, err = e.evaluate(t, alice, password, forBackup, "again")
	if err != nil || ev.GetOprfKeyVersion() != 2 {
		t.Fatalf("after a delete the next version is %d (%v), want 2", ev.GetOprfKeyVersion(), err)
	}
	if got := e.mustBackUp(t, alice, password, "again", 0); got.GetVersion() != 2 {
		t.Fatalf("version %d after delete", got.GetVersion())
	}
	if _, err := e.client.DeleteBackup(alice.ctx(), &backupv1.DeleteBackupRequest{Slot: password}); err != nil {
		t.Fatal(err)
	}
}

// TestEvaluateRateLimit: Evaluate is limited per identity.
func TestEvaluateRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{EvaluateRate: 1, EvaluateBurst: 3}})
	a := e.newApp(t)
	alice, bob := e.newUser(t, a, "alice"), e.newUser(t, a, "bob")
	for range 3 {
		if _, _, err := e.evaluate(t, alice, password, forBackup, "x"); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := e.evaluate(t, alice, password, forBackup, "x")
	wantCode(t, err, codes.ResourceExhausted, "Evaluate rate limit exceeded: at most 1 per second (burst 3) per identity; retry in 1s")
	if _, _, err := e.evaluate(t, bob, password, forBackup, "x"); err != nil {
		t.Fatalf("bob is limited by alice's calls: %v", err)
	}
	e.clock.Add(time.Second)
	if _, _, err := e.evaluate(t, alice, password, forBackup, "x"); err != nil {
		t.Fatalf("after a second: %v", err)
	}
}

// TestBadInputs: every malformed request gets INVALID_ARGUMENT with what was wrong,
// and writes nothing.
func TestBadInputs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{cfg: Config{EvaluateBurst: 1000}})
	alice := e.backedUpAlice(t, password, "right")
	good := blind(t, alice, password, "x").Element
	ev, out, err := e.evaluate(t, alice, recovery, forBackup, "x")
	if err != nil {
		t.Fatal(err)
	}
	record := func(f func(r *backupv1.BackupRecord)) *backupv1.BackupRecord {
		r := testRecord("x", authKey(out))
		f(r)
		return r
	}
	put := func(f func(r *backupv1.BackupRecord)) error {
		_, err := e.client.PutBackup(alice.ctx(), &backupv1.PutBackupRequest{Slot: recovery, Record: record(f), OprfKeyVersion: ev.GetOprfKeyVersion()})
		return err
	}
	evaluate := func(slot backupv1.BackupSlot, p backupv1.EvaluationPurpose, el []byte) error {
		_, err := e.client.Evaluate(alice.ctx(), &backupv1.EvaluateRequest{Slot: slot, Purpose: p, BlindedElement: el})
		return err
	}
	restore := func(slot backupv1.BackupSlot, key []byte, version uint64) error {
		_, err := e.client.Restore(alice.ctx(), &backupv1.RestoreRequest{Slot: slot, AuthKey: key, ExpectedVersion: version})
		return err
	}
	key32 := bytes.Repeat([]byte{1}, 32)
	nonCanonical := bytes.Repeat([]byte{0xff}, 32)
	// p + 1 (p = 2^255 - 19) little-endian: a field element not reduced mod p.
	unreduced := append([]byte{0xee}, bytes.Repeat([]byte{0xff}, 30)...)
	unreduced = append(unreduced, 0x7f)
	negative := make([]byte, 32)
	negative[0] = 1 // s = 1 is "negative" (odd): refused by ristretto decoding
	kdf := func(f func(k *backupv1.Argon2IdParams)) func(r *backupv1.BackupRecord) {
		return func(r *backupv1.BackupRecord) { f(r.Kdf) }
	}

	servicetest.CheckRefusals(t, []servicetest.Refusal{
		{"evaluate: no slot", func() error { return evaluate(0, forBackup, good) }, codes.InvalidArgument, "slot is unspecified"},
		{"evaluate: unknown slot", func() error { return evaluate(7, forBackup, good) }, codes.InvalidArgument, "slot 7 is not a backup slot"},
		{"evaluate: no purpose", func() error { return evaluate(password, 0, good) }, codes.InvalidArgument, "purpose is unspecified"},
		{"evaluate: unknown purpose", func() error { return evaluate(password, 9, good) }, codes.InvalidArgument, "purpose 9 is not an evaluation purpose"},
		{"evaluate: no element", func() error { return evaluate(password, forBackup, nil) }, codes.InvalidArgument, "blinded_element is 0 bytes; want 32"},
		{"evaluate: short element", func() error { return evaluate(password, forBackup, good[:31]) }, codes.InvalidArgument, "blinded_element is 31 bytes"},
		{"evaluate: long element", func() error { return evaluate(password, forBackup, append(good, 0)) }, codes.InvalidArgument, "blinded_element is 33 bytes"},
		{"evaluate: identity element", func() error { return evaluate(password, forRestore, make([]byte, 32)) }, codes.InvalidArgument, "blinded_element is the identity element"},
		{"evaluate: not an element", func() error { return evaluate(password, forRestore, nonCanonical) }, codes.InvalidArgument, "not the canonical encoding"},
		{"evaluate: unreduced encoding", func() error { return evaluate(password, forRestore, unreduced) }, codes.InvalidArgument, "not the canonical encoding"},
		{"evaluate: negative encoding", func() error { return evaluate(password, forRestore, negative) }, codes.InvalidArgument, "not the canonical encoding"},

		{"put: no slot", servicetest.Call(e.client.PutBackup, alice.ctx(), &backupv1.PutBackupRequest{Record: record(func(*backupv1.BackupRecord) {}), OprfKeyVersion: 1}), codes.InvalidArgument, "slot is unspecified"},
		{"put: no record", servicetest.Call(e.client.PutBackup, alice.ctx(), &backupv1.PutBackupRequest{Slot: recovery, OprfKeyVersion: 1}), codes.InvalidArgument, "record is missing"},
		{"put: no key version", servicetest.Call(e.client.PutBackup, alice.ctx(), &backupv1.PutBackupRequest{Slot: recovery, Record: record(func(*backupv1.BackupRecord) {})}), codes.Aborted, "derived under OPRF key version 0, but the recovery slot's next version is 1"},
		{"put: empty ciphertext", func() error { return put(func(r *backupv1.BackupRecord) { r.Ciphertext = nil }) }, codes.InvalidArgument, "record.ciphertext is empty"},
		{"put: ciphertext of a tag only", func() error { return put(func(r *backupv1.BackupRecord) { r.Ciphertext = make([]byte, 16) }) }, codes.InvalidArgument, "record.ciphertext is 16 bytes; at least 17"},
		{"put: ciphertext too large", func() error {
			return put(func(r *backupv1.BackupRecord) { r.Ciphertext = make([]byte, MaxCiphertext+1) })
		}, codes.InvalidArgument, "at most 1048592"},
		{"put: no nonce", func() error { return put(func(r *backupv1.BackupRecord) { r.Nonce = nil }) }, codes.InvalidArgument, "record.nonce is 0 bytes; want 12"},
		{"put: short nonce", func() error { return put(func(r *backupv1.BackupRecord) { r.Nonce = r.Nonce[:11] }) }, codes.InvalidArgument, "record.nonce is 11 bytes"},
		{"put: long nonce", func() error { return put(func(r *backupv1.BackupRecord) { r.Nonce = make([]byte, 24) }) }, codes.InvalidArgument, "record.nonce is 24 bytes"},
		{"put: no aead", func() error { return put(func(r *backupv1.BackupRecord) { r.Aead = 0 }) }, codes.InvalidArgument, "record.aead is unspecified"},
		{"put: unknown aead", func() error { return put(func(r *backupv1.BackupRecord) { r.Aead = 5 }) }, codes.InvalidArgument, "record.aead 5 is not a backup AEAD"},
		{"put: no verifier", func() error { return put(func(r *backupv1.BackupRecord) { r.AuthKeyHash = nil }) }, codes.InvalidArgument, "record.auth_key_hash is 0 bytes; want 32"},
		{"put: short verifier", func() error { return put(func(r *backupv1.BackupRecord) { r.AuthKeyHash = r.AuthKeyHash[:31] }) }, codes.InvalidArgument, "record.auth_key_hash is 31 bytes"},
		{"put: no kdf", func() error { return put(func(r *backupv1.BackupRecord) { r.Kdf = nil }) }, codes.InvalidArgument, "record.kdf is missing"},
		{"put: time 0", func() error { return put(kdf(func(k *backupv1.Argon2IdParams) { k.Time = 0 })) }, codes.InvalidArgument, "record.kdf.time is 0; want 1 to 16"},
		{"put: time 17", func() error { return put(kdf(func(k *backupv1.Argon2IdParams) { k.Time = 17 })) }, codes.InvalidArgument, "record.kdf.time is 17"},
		{"put: memory below 8 MiB", func() error { return put(kdf(func(k *backupv1.Argon2IdParams) { k.MemoryKib = 8191 })) }, codes.InvalidArgument, "record.kdf.memory_kib is 8191; want 8192 (8 MiB) to 4194304 (4 GiB)"},
		{"put: memory above 4 GiB", func() error { return put(kdf(func(k *backupv1.Argon2IdParams) { k.MemoryKib = 4<<20 + 1 })) }, codes.InvalidArgument, "record.kdf.memory_kib is 4194305"},
		{"put: threads 0", func() error { return put(kdf(func(k *backupv1.Argon2IdParams) { k.Threads = 0 })) }, codes.InvalidArgument, "record.kdf.threads is 0; want 1 to 64"},
		{"put: threads 65", func() error { return put(kdf(func(k *backupv1.Argon2IdParams) { k.Threads = 65 })) }, codes.InvalidArgument, "record.kdf.threads is 65"},
		{"put: no salt", func() error { return put(kdf(func(k *backupv1.Argon2IdParams) { k.Salt = nil })) }, codes.InvalidArgument, "record.kdf.salt is 0 bytes; want 16 to 64"},
		{"put: short salt", func() error { return put(kdf(func(k *backupv1.Argon2IdParams) { k.Salt = k.Salt[:15] })) }, codes.InvalidArgument, "record.kdf.salt is 15 bytes"},
		{"put: long salt", func() error { return put(kdf(func(k *backupv1.Argon2IdParams) { k.Salt = make([]byte, 65) })) }, codes.InvalidArgument, "record.kdf.salt is 65 bytes"},

		{"restore: no slot", func() error { return restore(0, key32, 1) }, codes.InvalidArgument, "slot is unspecified"},
		{"restore: unknown slot", func() error { return restore(3, key32, 1) }, codes.InvalidArgument, "slot 3 is not a backup slot"},
		{"restore: no auth key", func() error { return restore(password, nil, 1) }, codes.InvalidArgument, "auth_key is 0 bytes; want 32"},
		{"restore: short auth key", func() error { return restore(password, key32[:31], 1) }, codes.InvalidArgument, "auth_key is 31 bytes"},
		{"restore: long auth key", func() error { return restore(password, append(key32, 1), 1) }, codes.InvalidArgument, "auth_key is 33 bytes"},
		{"restore: no version", func() error { return restore(password, key32, 0) }, codes.Aborted, "holds version 1, not 0: evaluate (RESTORE) again; no attempt was spent"},
		{"restore: empty slot", func() error { return restore(recovery, key32, 1) }, codes.NotFound, "the recovery slot holds no backup"},

		{"delete: no slot", servicetest.Call(e.client.DeleteBackup, alice.ctx(), &backupv1.DeleteBackupRequest{}), codes.InvalidArgument, "slot is unspecified"},
		{"delete: empty slot", servicetest.Call(e.client.DeleteBackup, alice.ctx(), &backupv1.DeleteBackupRequest{Slot: recovery}), codes.NotFound, "the recovery slot holds no backup to delete"},
		{"evaluate: restore of an empty slot", func() error { return evaluate(recovery, forRestore, good) }, codes.NotFound, "the recovery slot holds no backup to restore"},
	}, e.snapshot)
	// The bounds themselves are accepted.
	for _, f := range []func(r *backupv1.BackupRecord){
		func(r *backupv1.BackupRecord) {
			r.Ciphertext, r.Aead = make([]byte, MinCiphertext), backupv1.BackupAead_BACKUP_AEAD_AES_256_GCM
			r.Kdf = &backupv1.Argon2IdParams{Time: 1, MemoryKib: 8 << 10, Threads: 1, Salt: make([]byte, 16)}
		},
		func(r *backupv1.BackupRecord) {
			r.Ciphertext = make([]byte, MaxCiphertext)
			r.Kdf = &backupv1.Argon2IdParams{Time: 16, MemoryKib: 4 << 20, Threads: 64, Salt: make([]byte, 64)}
		},
	} {
		ev, out, err := e.evaluate(t, alice, recovery, forBackup, "bounds")
		if err != nil {
			t.Fatal(err)
		}
		current := e.info(t, alice, recovery).GetVersion()
		r := testRecord("bounds", authKey(out))
		f(r)
		resp, err := e.client.PutBackup(alice.ctx(), &backupv1.PutBackupRequest{Slot: recovery, Record: r, ExpectedVersion: current, OprfKeyVersion: ev.GetOprfKeyVersion()})
		if err != nil {
			t.Fatalf("record at the bounds refused: %v", err)
		}
		if resp.GetBackup().GetCiphertextSize() != uint32(len(r.GetCiphertext())) || !proto.Equal(resp.GetBackup().GetKdf(), r.GetKdf()) {
			t.Fatalf("stored %v", resp.GetBackup())
		}
	}
}

// subscription is an open Subscribe stream of one user.
type subscription struct{ *servicetest.Inbox }

// subscribe opens u's messaging stream, from its start, for the rest of the test.
func (e *env) subscribe(t testing.TB, u user) subscription {
	t.Helper()
	return subscription{servicetest.SubscribeFromStart(t, u.ctx(), e.messaging, 64)}
}

// next returns the next item that is not a heartbeat.
func (s subscription) next(t testing.TB) *messagingv1.SubscribeResponse {
	t.Helper()
	return s.Next(t, 10*time.Second)
}

// waitOutboxEmpty waits for the outbox to have delivered everything.
func waitOutboxEmpty(t testing.TB, e *env) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pending, err := e.store.Outbox(10)
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still holds %d events", len(pending))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
