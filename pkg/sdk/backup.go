package sdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/pkg/argon2id"
	"github.com/umbra-e2ee/umbra/pkg/keybackup"
	"github.com/umbra-e2ee/umbra/pkg/keystore"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// WrongPasswordError is a refused password or recovery key.
type WrongPasswordError struct {
	// Slot is the slot whose secret was wrong.
	Slot keybackup.Slot
	// Remaining is the number of wrong guesses left before the backup is erased.
	Remaining uint32
	// Erased reports that this failure erased the backup.
	Erased bool
}

func (e *WrongPasswordError) Error() string {
	what := "password"
	if e.Slot == keybackup.SlotRecovery {
		what = "recovery key"
	}
	switch {
	case e.Erased:
		return fmt.Sprintf("sdk: wrong backup %s and no attempt left: the backup was erased; back up again", what)
	case e.Remaining == 1:
		return fmt.Sprintf("sdk: wrong backup %s: 1 attempt remains before the backup is erased", what)
	}
	return fmt.Sprintf("sdk: wrong backup %s: %d attempts remain before the backup is erased", what, e.Remaining)
}

// Is makes errors.Is match ErrWrongPassword, and ErrBackupErased if the backup is gone.
func (e *WrongPasswordError) Is(target error) bool {
	return target == ErrWrongPassword || (e.Erased && target == ErrBackupErased)
}

// BackupInfo describes a stored backup.
type BackupInfo = backupv1.BackupInfo

// traceSecret, when set (by this package's tests), is shown every secret value a
// backup or restore computes, so that a test can prove none of them reaches the wire.
var traceSecret func(name string, value []byte)

func trace(name string, value []byte) {
	if traceSecret != nil {
		traceSecret(name, bytes.Clone(value))
	}
}

func (c *Client) backupService() backupv1.BackupServiceClient {
	return backupv1.NewBackupServiceClient(c.conn)
}

// binding returns the caller's app, identity and slot, as the identity service knows
// them; with keys in the keystore, they must be that identity's.
func (c *Client) binding(ctx context.Context, slot keybackup.Slot) (keybackup.Binding, error) {
	who, err := c.identity.WhoAmI(ctx, &identityv1.WhoAmIRequest{})
	if err != nil {
		return keybackup.Binding{}, err
	}
	c.mu.Lock()
	ks := c.ks
	c.mu.Unlock()
	if ks != nil && ks.Identity() != who.GetIdentity() {
		return keybackup.Binding{}, fmt.Errorf("sdk: the keystore holds %s's keys, but the access token is %s's", ks.Identity(), who.GetIdentity())
	}
	return keybackup.Binding{App: who.GetAppId(), Identity: who.GetIdentity(), Slot: slot}, nil
}

// evaluate runs the OPRF on secret with the service: blind, Evaluate, check the proof
// and finalise. It returns the output and the evaluation's key version.
func (c *Client) evaluate(ctx context.Context, b keybackup.Binding, secret []byte, purpose backupv1.EvaluationPurpose) (*keybackup.Output, uint64, error) {
	if traceSecret != nil {
		input, err := keybackup.OPRFInput(b, secret)
		if err != nil {
			return nil, 0, err
		}
		trace("oprf input", input)
	}
	bl, err := keybackup.Blind(b, secret)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.backupService().Evaluate(ctx, &backupv1.EvaluateRequest{
		Slot:           backupv1.BackupSlot(b.Slot),
		Purpose:        purpose,
		BlindedElement: bl.Element(),
	})
	if err != nil {
		return nil, 0, backupError(b.Slot, err)
	}
	out, err := bl.Finalize(resp.GetEvaluatedElement(), resp.GetProof(), resp.GetPublicKey())
	if err != nil {
		return nil, 0, fmt.Errorf("sdk: the backup service's evaluation: %w", err)
	}
	if resp.GetOprfKeyVersion() == 0 {
		return nil, 0, fmt.Errorf("sdk: the backup service's evaluation names key version 0")
	}
	trace("oprf output", out.Value)
	return out, resp.GetOprfKeyVersion(), nil
}

// deriveKeys is keybackup.DeriveKeys, traced.
func deriveKeys(out *keybackup.Output, p keybackup.Params) (*keybackup.Keys, error) {
	keys, err := keybackup.DeriveKeys(out, p)
	if err != nil {
		return nil, err
	}
	if traceSecret != nil {
		stretched, err := keybackup.Stretch(out, p.KDF)
		if err != nil {
			return nil, err
		}
		trace("stretched", stretched)
		trace("encryption key", keys.EncryptionKey())
	}
	return keys, nil
}

// backupError turns the backup service's statuses into the SDK's errors.
func backupError(slot keybackup.Slot, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.PermissionDenied:
		if f := statusDetail[*backupv1.RestoreFailure](err); f != nil {
			return &WrongPasswordError{Slot: slot, Remaining: f.GetRemainingAttempts(), Erased: f.GetErased()}
		}
	case codes.Aborted:
		return fmt.Errorf("%w: %s", ErrBackupConflict, st.Message())
	case codes.NotFound:
		return fmt.Errorf("%w: %s", ErrNoBackup, st.Message())
	}
	return err
}

// info returns the slot's stored backup, or ErrNoBackup.
func (c *Client) info(ctx context.Context, slot keybackup.Slot) (*BackupInfo, error) {
	all, err := c.Backups(ctx)
	if err != nil {
		return nil, err
	}
	for _, b := range all {
		if b.GetSlot() == backupv1.BackupSlot(slot) {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%w in the %s slot", ErrNoBackup, slot)
}

// Backups describes the user's stored backups, one per slot that holds one.
func (c *Client) Backups(ctx context.Context) ([]*BackupInfo, error) {
	resp, err := c.backupService().GetBackupInfo(ctx, &backupv1.GetBackupInfoRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetBackups(), nil
}

func kdfParams(k *backupv1.Argon2IdParams) argon2id.Params {
	return argon2id.Params{Time: k.GetTime(), MemoryKiB: k.GetMemoryKib(), Threads: k.GetThreads(), Salt: k.GetSalt()}
}

// fetch restores a slot with secret: it returns the key bundle and the record's
// version. info is the slot's stored backup, as c.info returned it.
func (c *Client) fetch(ctx context.Context, b keybackup.Binding, info *BackupInfo, secret []byte) ([]byte, uint64, error) {
	// Before spending an attempt: a password is never stretched with less than our
	// floor for a service to receive (keybackup.MinPasswordCost).
	if b.Slot == keybackup.SlotPassword {
		if err := keybackup.CheckPasswordCost(kdfParams(info.GetKdf())); err != nil {
			return nil, 0, fmt.Errorf("sdk: refusing the stored backup: %w", err)
		}
	}
	out, version, err := c.evaluate(ctx, b, secret, backupv1.EvaluationPurpose_EVALUATION_PURPOSE_RESTORE)
	if err != nil {
		return nil, 0, err
	}
	if version != info.GetVersion() {
		return nil, 0, fmt.Errorf("%w: the %s slot went from version %d to %d; try again", ErrBackupConflict, b.Slot, info.GetVersion(), version)
	}
	p := keybackup.Params{Version: version, AEAD: keybackup.AEAD(info.GetAead()), KDF: kdfParams(info.GetKdf())}
	keys, err := deriveKeys(out, p)
	if err != nil {
		return nil, 0, fmt.Errorf("sdk: the stored backup's parameters: %w", err)
	}
	resp, err := c.backupService().Restore(ctx, &backupv1.RestoreRequest{
		Slot:            backupv1.BackupSlot(b.Slot),
		AuthKey:         keys.AuthKey(),
		ExpectedVersion: version,
	})
	if err != nil {
		return nil, 0, backupError(b.Slot, err)
	}
	if resp.GetVersion() != version || keybackup.AEAD(resp.GetAead()) != p.AEAD || !proto.Equal(resp.GetKdf(), info.GetKdf()) {
		return nil, 0, fmt.Errorf("%w: the record released is not the one described (version %d, not %d, or other parameters)", ErrBackupTampered, resp.GetVersion(), version)
	}
	bundle, err := keys.Open(resp.GetNonce(), resp.GetCiphertext())
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrBackupTampered, err)
	}
	trace("key bundle", bundle)
	return bundle, version, nil
}

// store encrypts bundle under secret into the slot, replacing version expected (0:
// the slot must be empty).
func (c *Client) store(ctx context.Context, b keybackup.Binding, secret, bundle []byte, expected uint64, cost argon2id.Params) (*BackupInfo, error) {
	out, version, err := c.evaluate(ctx, b, secret, backupv1.EvaluationPurpose_EVALUATION_PURPOSE_BACKUP)
	if err != nil {
		return nil, err
	}
	kdf, err := keybackup.NewArgon2id(cost, nil)
	if err != nil {
		return nil, err
	}
	keys, err := deriveKeys(out, keybackup.Params{Version: version, AEAD: keybackup.ChaCha20Poly1305, KDF: kdf})
	if err != nil {
		return nil, err
	}
	trace("key bundle", bundle)
	nonce, ciphertext, err := keys.Seal(nil, bundle)
	if err != nil {
		return nil, err
	}
	resp, err := c.backupService().PutBackup(ctx, &backupv1.PutBackupRequest{
		Slot: backupv1.BackupSlot(b.Slot),
		Record: &backupv1.BackupRecord{
			Ciphertext:  ciphertext,
			Nonce:       nonce,
			Aead:        backupv1.BackupAead_BACKUP_AEAD_CHACHA20_POLY1305,
			AuthKeyHash: keys.AuthKeyHash(),
			Kdf:         &backupv1.Argon2IdParams{Time: kdf.Time, MemoryKib: kdf.MemoryKiB, Threads: kdf.Threads, Salt: kdf.Salt},
		},
		ExpectedVersion: expected,
		OprfKeyVersion:  version,
	})
	if err != nil {
		return nil, backupError(b.Slot, err)
	}
	return resp.GetBackup(), nil
}

// localBundle returns the keystore's key bundle, or ErrNoPrivateKey.
func (c *Client) localBundle() ([]byte, error) {
	ks, _, _, err := c.current()
	if err != nil {
		return nil, err
	}
	return ks.KeyBundle()
}

// BackupPrivateKey backs up every key of the keystore (current and superseded) under
// password. With no backup yet it creates one. With one, it first proves the password
// against it (a wrong password counts as a guess) and replaces it only if every key it
// holds is also here, so that one device never drops keys another one backed up; so
// after RotateKeys, call it again to add the new key. Passwords are used as given:
// normalise Unicode first if they are typed on several kinds of device.
func (c *Client) BackupPrivateKey(ctx context.Context, password []byte) (*BackupInfo, error) {
	bundle, err := c.localBundle()
	if err != nil {
		return nil, err
	}
	b, err := c.binding(ctx, keybackup.SlotPassword)
	if err != nil {
		return nil, err
	}
	var expected uint64
	if info, err := c.info(ctx, keybackup.SlotPassword); err == nil {
		stored, version, err := c.fetch(ctx, b, info, password)
		if err != nil {
			return nil, err
		}
		if err := coversKeys(bundle, stored); err != nil {
			return nil, err
		}
		expected = version
	} else if !errors.Is(err, ErrNoBackup) {
		return nil, err
	}
	return c.store(ctx, b, password, bundle, expected, argon2id.Default)
}

// coversKeys checks that bundle holds every key of stored, of the same identity.
func coversKeys(bundle, stored []byte) error {
	var have, old envelopev1.KeyBundle
	if err := proto.Unmarshal(bundle, &have); err != nil {
		return fmt.Errorf("sdk: key bundle: %w", err)
	}
	if err := proto.Unmarshal(stored, &old); err != nil {
		return fmt.Errorf("%w: the stored key bundle does not parse: %v", ErrBackupTampered, err)
	}
	if old.GetIdentity() != have.GetIdentity() {
		return fmt.Errorf("%w: the backup holds %s's keys, not %s's", ErrBackupMissesKeys, old.GetIdentity(), have.GetIdentity())
	}
	ids := map[string]bool{}
	for _, k := range have.GetKeys() {
		ids[string(k.GetCardId())] = true
	}
	for _, k := range old.GetKeys() {
		if !ids[string(k.GetCardId())] {
			return fmt.Errorf("%w: the key of card %x; restore on this device first (RestorePrivateKey into an empty keystore)", ErrBackupMissesKeys, k.GetCardId())
		}
	}
	return nil
}

// RestorePrivateKey restores every key of the password backup into this device's
// keystore, which must hold none (a new device, or after Cleanup). A wrong password is
// a *WrongPasswordError that says how many attempts remain.
func (c *Client) RestorePrivateKey(ctx context.Context, password []byte) error {
	return c.restoreInto(ctx, keybackup.SlotPassword, password)
}

// RestoreFromRecoveryKey restores every key of the recovery backup, as
// RestorePrivateKey does, with the recovery key CreateRecoveryKey returned (in any
// case, with or without dashes). A mistyped key is caught by its check group
// (keybackup.ErrRecoveryKey) before anything is sent; a wrong one counts as a guess.
func (c *Client) RestoreFromRecoveryKey(ctx context.Context, recoveryKey string) error {
	k, err := keybackup.ParseRecoveryKey(recoveryKey)
	if err != nil {
		return err
	}
	return c.restoreInto(ctx, keybackup.SlotRecovery, k[:])
}

func (c *Client) restoreInto(ctx context.Context, slot keybackup.Slot, secret []byte) error {
	if c.HasPrivateKey() {
		return fmt.Errorf("%w: restore only into an empty keystore (Cleanup first, if its keys are backed up)", ErrKeysPresent)
	}
	b, err := c.binding(ctx, slot)
	if err != nil {
		return err
	}
	info, err := c.info(ctx, slot)
	if err != nil {
		return err
	}
	bundle, _, err := c.fetch(ctx, b, info, secret)
	if err != nil {
		return err
	}
	ks, err := keystore.Create(c.cfg.KeystorePath, keystore.Options{
		Identity:     b.Identity,
		Passphrase:   c.passphrase(),
		NoPassphrase: c.cfg.NoPassphrase,
		Argon2id:     c.cfg.keystoreArgon2id,
		KeyBundle:    bundle,
	})
	if err != nil {
		return fmt.Errorf("sdk: keystore from the backup: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ks != nil {
		return fmt.Errorf("%w: keys appeared during the restore", ErrKeysPresent)
	}
	c.ks, c.me = ks, ks.Identity()
	return nil
}

// ChangePassword re-encrypts the password backup under newPassword: it restores the
// backup with oldPassword and stores the same keys under the new one, replacing the
// version it restored (ErrBackupConflict if another device changed it meanwhile). It
// needs no keys on this device.
func (c *Client) ChangePassword(ctx context.Context, oldPassword, newPassword []byte) (*BackupInfo, error) {
	b, err := c.binding(ctx, keybackup.SlotPassword)
	if err != nil {
		return nil, err
	}
	info, err := c.info(ctx, keybackup.SlotPassword)
	if err != nil {
		return nil, err
	}
	bundle, version, err := c.fetch(ctx, b, info, oldPassword)
	if err != nil {
		return nil, err
	}
	return c.store(ctx, b, newPassword, bundle, version, argon2id.Default)
}

// ResetBackup deletes the password backup, for a forgotten password: back up again
// afterwards. The recovery backup stays (DeleteRecoveryKey removes it).
func (c *Client) ResetBackup(ctx context.Context) error {
	return c.deleteSlot(ctx, keybackup.SlotPassword)
}

// DeleteRecoveryKey deletes the recovery backup: the recovery key no longer restores.
func (c *Client) DeleteRecoveryKey(ctx context.Context) error {
	return c.deleteSlot(ctx, keybackup.SlotRecovery)
}

func (c *Client) deleteSlot(ctx context.Context, slot keybackup.Slot) error {
	_, err := c.backupService().DeleteBackup(ctx, &backupv1.DeleteBackupRequest{Slot: backupv1.BackupSlot(slot)})
	if err != nil {
		return backupError(slot, err)
	}
	return nil
}

// CreateRecoveryKey makes a new recovery key, backs up every key of the keystore under
// it in the recovery slot (replacing the previous recovery backup, whose key then
// restores nothing), and returns it for the user to write down: nine groups of four
// characters. Call it again after RotateKeys to include the new key.
func (c *Client) CreateRecoveryKey(ctx context.Context) (string, error) {
	bundle, err := c.localBundle()
	if err != nil {
		return "", err
	}
	b, err := c.binding(ctx, keybackup.SlotRecovery)
	if err != nil {
		return "", err
	}
	var expected uint64
	if info, err := c.info(ctx, keybackup.SlotRecovery); err == nil {
		expected = info.GetVersion()
	} else if !errors.Is(err, ErrNoBackup) {
		return "", err
	}
	k, err := keybackup.NewRecoveryKey(nil)
	if err != nil {
		return "", err
	}
	trace("recovery key", k[:])
	if _, err := c.store(ctx, b, k[:], bundle, expected, keybackup.RecoveryArgon2id); err != nil {
		return "", err
	}
	return k.String(), nil
}

// BackupEventType is the Event.type of the backup service's events.
const BackupEventType = "umbra.backup.v1.BackupEvent"

// BackupEvent decodes a backup event from a Subscribe item (today: a backup erased
// after its attempts ran out, which means someone kept trying wrong passwords with the
// user's access token); ok is false for an item that is not one.
func BackupEvent(item *messagingv1.SubscribeResponse) (ev *backupv1.BackupEvent, ok bool) {
	return decodeEvent[backupv1.BackupEvent](item, BackupEventType)
}
