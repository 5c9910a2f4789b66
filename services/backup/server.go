package backup

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ratelimit"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	backupstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/backup/v1"
)

// Server implements umbra.backup.v1.BackupService. Run delivers its events.
type Server struct {
	backupv1.UnimplementedBackupServiceServer
	store       Store
	keys        *keyDeriver
	evaluations *ratelimit.Limiter
	maxAttempts uint32
	now         func() time.Time
	log         *zap.Logger

	events      Events
	outboxRetry time.Duration
	// wake tells Run that an event was written to the outbox.
	wake chan struct{}
}

var _ backupv1.BackupServiceServer = (*Server)(nil)

// New returns a Server over store. It refuses a missing or short secret, and a secret
// other than the one store was first used with. events reaches the messaging service;
// nil keeps events in the outbox until a server with one runs. A nil log discards logs.
func New(store Store, events Events, cfg Config, log *zap.Logger) (*Server, error) {
	if log == nil {
		log = zap.NewNop()
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	check := secretCheck(cfg.Secret)
	stored, err := store.SecretCheck(check)
	if err != nil {
		return nil, fmt.Errorf("backup: secret check: %w", err)
	}
	if !sameCheck(stored, check) {
		return nil, errors.New("backup: the server secret is not the one the backup store (backup.db, or the schema umbra_backup) was created with: " +
			"every OPRF key would change and no backup could be restored; start with the original secret")
	}
	limiter, err := ratelimit.New(ratelimit.Config{Rate: cfg.EvaluateRate, Burst: cfg.EvaluateBurst, Clock: cfg.Clock})
	if err != nil {
		return nil, fmt.Errorf("backup: evaluate rate limit: %w", err)
	}
	return &Server{
		store:       store,
		keys:        newKeyDeriver(cfg.Secret, cfg.KeyCacheSize),
		evaluations: limiter,
		maxAttempts: uint32(cfg.MaxAttempts),
		now:         cfg.Clock,
		log:         log,
		events:      events,
		outboxRetry: cfg.OutboxRetry,
		wake:        make(chan struct{}, 1),
	}, nil
}

// Register registers the service on g.
func (s *Server) Register(g grpc.ServiceRegistrar) { backupv1.RegisterBackupServiceServer(g, s) }

// slotName names a slot in messages: "password" or "recovery".
func slotName(slot uint32) string {
	switch backupv1.BackupSlot(slot) {
	case backupv1.BackupSlot_BACKUP_SLOT_PASSWORD:
		return "password"
	case backupv1.BackupSlot_BACKUP_SLOT_RECOVERY:
		return "recovery"
	}
	return fmt.Sprintf("%d", slot)
}

// callerSlot returns the user a request acts for and the slot it names, checked.
func callerSlot(ctx context.Context, slot backupv1.BackupSlot) (*auth.Principal, uint32, error) {
	p, err := auth.User(ctx)
	if err != nil {
		return nil, 0, err
	}
	n, err := validSlot(slot)
	return p, n, err
}

// Evaluate implements BackupService.
func (s *Server) Evaluate(ctx context.Context, req *backupv1.EvaluateRequest) (*backupv1.EvaluateResponse, error) {
	p, slot, err := callerSlot(ctx, req.GetSlot())
	if err != nil {
		return nil, err
	}
	if err := validPurpose(req.GetPurpose()); err != nil {
		return nil, err
	}
	blinded, err := parseElement(req.GetBlindedElement())
	if err != nil {
		return nil, err
	}
	if ok, retry := s.evaluations.Allow(p.AppID + "\x00" + p.Identity); !ok {
		return nil, errs.Exhaustedf("Evaluate rate limit exceeded: at most %s per identity; retry in %s", s.evaluations, retry.Round(time.Millisecond))
	}
	resp := &backupv1.EvaluateResponse{}
	if req.GetPurpose() == backupv1.EvaluationPurpose_EVALUATION_PURPOSE_BACKUP {
		rec, err := s.store.Slot(p.AppID, p.Identity, slot)
		if err != nil {
			return nil, err
		}
		resp.OprfKeyVersion = rec.GetLatestVersion() + 1
	} else {
		rec, err := s.store.UpdateSlot(p.AppID, p.Identity, slot, s.spendEvaluation)
		s.afterUpdate(p, slot, rec, err)
		if err != nil {
			return nil, err
		}
		resp.OprfKeyVersion = rec.GetBackup().GetVersion()
		resp.RemainingAttempts = rec.GetRemainingAttempts()
	}
	key, err := s.keys.key(keyRef{app: p.AppID, identity: p.Identity, slot: slot, version: resp.OprfKeyVersion})
	if err != nil {
		return nil, err
	}
	if resp.EvaluatedElement, resp.Proof, err = key.evaluate(blinded); err != nil {
		return nil, err
	}
	resp.PublicKey = key.public
	return resp, nil
}

// spendEvaluation is a RESTORE evaluation's update: it spends one attempt, or erases
// the slot when none is left.
func (s *Server) spendEvaluation(rec *backupstoragev1.BackupSlotRecord) (Change, error) {
	b := rec.GetBackup()
	if b == nil {
		return Change{}, errs.NotFoundf("the %s slot holds no backup to restore", slotName(rec.GetSlot()))
	}
	left := min(rec.GetRemainingAttempts(), s.maxAttempts)
	if left == 0 {
		return s.erase(rec, fmt.Sprintf("no attempt left in the %s slot's budget", slotName(rec.GetSlot())))
	}
	rec.RemainingAttempts = left - 1
	rec.UnspentEvaluations++
	return Change{Write: true}, nil
}

// erase removes rec's backup because its attempts ran out, queues the owner's event,
// and returns the PERMISSION_DENIED that says so. why starts the message.
func (s *Server) erase(rec *backupstoragev1.BackupSlotRecord, why string) (Change, error) {
	version := rec.GetBackup().GetVersion()
	event, err := erasedEvent(rec, s.now())
	if err != nil {
		return Change{}, err
	}
	rec.Backup = nil
	rec.RemainingAttempts = 0
	rec.UnspentEvaluations = 0
	return Change{Write: true, Event: event},
		errs.Permissionf("%s: the backup (version %d) was erased; restore from another slot, or back up again", why, version).
			WithDetails(&backupv1.RestoreFailure{RemainingAttempts: 0, Erased: true})
}

// afterUpdate logs what a slot update did and wakes the outbox when it erased the
// slot: an update refused with PERMISSION_DENIED that left no backup was an erasure.
func (s *Server) afterUpdate(p *auth.Principal, slot uint32, rec *backupstoragev1.BackupSlotRecord, err error) {
	if !errors.Is(err, errs.ErrPermission) || rec == nil || rec.GetBackup() != nil {
		return
	}
	s.log.Warn("backup erased: no attempt left", zap.String("app", p.AppID), zap.String("identity", p.Identity),
		zap.String("slot", slotName(slot)), zap.Uint64("latest_version", rec.GetLatestVersion()))
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// PutBackup implements BackupService.
func (s *Server) PutBackup(ctx context.Context, req *backupv1.PutBackupRequest) (*backupv1.PutBackupResponse, error) {
	p, slot, err := callerSlot(ctx, req.GetSlot())
	if err != nil {
		return nil, err
	}
	if err := validRecord(req.GetRecord()); err != nil {
		return nil, err
	}
	r := req.GetRecord()
	now := s.now()
	rec, err := s.store.UpdateSlot(p.AppID, p.Identity, slot, func(rec *backupstoragev1.BackupSlotRecord) (Change, error) {
		current := rec.GetBackup().GetVersion()
		if req.GetExpectedVersion() != current {
			if current == 0 {
				return Change{}, errs.Conflictf("the %s slot holds no backup, but expected_version is %d: pass 0 to create one", slotName(slot), req.GetExpectedVersion())
			}
			return Change{}, errs.Conflictf("the %s slot holds version %d, not %d: another device changed it; restore the current version before replacing it", slotName(slot), current, req.GetExpectedVersion())
		}
		next := rec.GetLatestVersion() + 1
		if req.GetOprfKeyVersion() != next {
			return Change{}, errs.Conflictf("the record was derived under OPRF key version %d, but the %s slot's next version is %d: evaluate (BACKUP) again and derive the record anew", req.GetOprfKeyVersion(), slotName(slot), next)
		}
		rec.LatestVersion = next
		rec.RemainingAttempts = s.maxAttempts
		rec.UnspentEvaluations = 0
		rec.Backup = &backupstoragev1.BackupStoredRecord{
			Version:           next,
			Ciphertext:        r.GetCiphertext(),
			Nonce:             r.GetNonce(),
			Aead:              uint32(r.GetAead()),
			AuthKeyHash:       r.GetAuthKeyHash(),
			Argon2IdTime:      r.GetKdf().GetTime(),
			Argon2IdMemoryKib: r.GetKdf().GetMemoryKib(),
			Argon2IdThreads:   r.GetKdf().GetThreads(),
			Argon2IdSalt:      r.GetKdf().GetSalt(),
			StoredAt:          timestamppb.New(now),
		}
		return Change{Write: true}, nil
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("backup stored", zap.String("app", p.AppID), zap.String("identity", p.Identity),
		zap.String("slot", slotName(slot)), zap.Uint64("version", rec.GetBackup().GetVersion()), zap.Int("ciphertext_size", len(r.GetCiphertext())))
	return &backupv1.PutBackupResponse{Backup: s.info(rec)}, nil
}

// Restore implements BackupService.
func (s *Server) Restore(ctx context.Context, req *backupv1.RestoreRequest) (*backupv1.RestoreResponse, error) {
	p, slot, err := callerSlot(ctx, req.GetSlot())
	if err != nil {
		return nil, err
	}
	if err := validAuthKey(req.GetAuthKey()); err != nil {
		return nil, err
	}
	hash := sha256.Sum256(req.GetAuthKey())
	rec, err := s.store.UpdateSlot(p.AppID, p.Identity, slot, func(rec *backupstoragev1.BackupSlotRecord) (Change, error) {
		b := rec.GetBackup()
		switch {
		case b == nil:
			return Change{}, errs.NotFoundf("the %s slot holds no backup to restore", slotName(slot))
		case b.GetVersion() != req.GetExpectedVersion():
			return Change{}, errs.Conflictf("the %s slot holds version %d, not %d: evaluate (RESTORE) again; no attempt was spent", slotName(slot), b.GetVersion(), req.GetExpectedVersion())
		}
		if subtle.ConstantTimeCompare(hash[:], b.GetAuthKeyHash()) == 1 {
			if rec.GetRemainingAttempts() == s.maxAttempts && rec.GetUnspentEvaluations() == 0 {
				return Change{}, nil
			}
			rec.RemainingAttempts = s.maxAttempts
			rec.UnspentEvaluations = 0
			return Change{Write: true}, nil
		}
		left := min(rec.GetRemainingAttempts(), s.maxAttempts)
		if rec.GetUnspentEvaluations() > 0 {
			rec.UnspentEvaluations-- // this guess was paid for by its evaluation
		} else if left > 0 {
			left--
		}
		rec.RemainingAttempts = left
		if left == 0 && rec.GetUnspentEvaluations() == 0 {
			return s.erase(rec, fmt.Sprintf("wrong auth key for the %s slot and no attempt left", slotName(slot)))
		}
		return Change{Write: true}, errs.Permissionf("wrong auth key for the %s slot (wrong password or recovery key): %s", slotName(slot), attemptsLeft(left, rec.GetUnspentEvaluations())).
			WithDetails(&backupv1.RestoreFailure{RemainingAttempts: left})
	})
	s.afterUpdate(p, slot, rec, err)
	if err != nil {
		if errors.Is(err, errs.ErrPermission) && rec.GetBackup() != nil {
			s.log.Info("restore refused: wrong auth key", zap.String("app", p.AppID), zap.String("identity", p.Identity),
				zap.String("slot", slotName(slot)), zap.Uint32("remaining_attempts", rec.GetRemainingAttempts()))
		}
		return nil, err
	}
	b := rec.GetBackup()
	return &backupv1.RestoreResponse{
		Ciphertext: b.GetCiphertext(),
		Nonce:      b.GetNonce(),
		Aead:       backupv1.BackupAead(b.GetAead()),
		Kdf:        kdfOf(b),
		Version:    b.GetVersion(),
	}, nil
}

// attemptsLeft says how many wrong guesses remain before a slot is erased.
func attemptsLeft(left, unspent uint32) string {
	msg := fmt.Sprintf("%d attempts remain before the backup is erased", left)
	if left == 1 {
		msg = "1 attempt remains before the backup is erased"
	}
	if unspent > 0 {
		msg += fmt.Sprintf(", besides %d evaluations already made and not yet used", unspent)
	}
	return msg
}

// GetBackupInfo implements BackupService.
func (s *Server) GetBackupInfo(ctx context.Context, _ *backupv1.GetBackupInfoRequest) (*backupv1.GetBackupInfoResponse, error) {
	p, err := auth.User(ctx)
	if err != nil {
		return nil, err
	}
	recs, err := s.store.Slots(p.AppID, p.Identity)
	if err != nil {
		return nil, err
	}
	resp := &backupv1.GetBackupInfoResponse{}
	for _, rec := range recs {
		if rec.GetBackup() != nil {
			resp.Backups = append(resp.Backups, s.info(rec))
		}
	}
	return resp, nil
}

// DeleteBackup implements BackupService.
func (s *Server) DeleteBackup(ctx context.Context, req *backupv1.DeleteBackupRequest) (*backupv1.DeleteBackupResponse, error) {
	p, slot, err := callerSlot(ctx, req.GetSlot())
	if err != nil {
		return nil, err
	}
	var version uint64
	_, err = s.store.UpdateSlot(p.AppID, p.Identity, slot, func(rec *backupstoragev1.BackupSlotRecord) (Change, error) {
		b := rec.GetBackup()
		switch {
		case b == nil:
			return Change{}, errs.NotFoundf("the %s slot holds no backup to delete", slotName(slot))
		case req.GetExpectedVersion() != 0 && req.GetExpectedVersion() != b.GetVersion():
			return Change{}, errs.Conflictf("the %s slot holds version %d, not %d: nothing was deleted", slotName(slot), b.GetVersion(), req.GetExpectedVersion())
		}
		version = b.GetVersion()
		rec.Backup = nil
		rec.RemainingAttempts = 0
		rec.UnspentEvaluations = 0
		return Change{Write: true}, nil
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("backup deleted", zap.String("app", p.AppID), zap.String("identity", p.Identity),
		zap.String("slot", slotName(slot)), zap.Uint64("version", version))
	return &backupv1.DeleteBackupResponse{}, nil
}

// info describes rec's backup.
func (s *Server) info(rec *backupstoragev1.BackupSlotRecord) *backupv1.BackupInfo {
	b := rec.GetBackup()
	return &backupv1.BackupInfo{
		Slot:              backupv1.BackupSlot(rec.GetSlot()),
		Version:           b.GetVersion(),
		Kdf:               kdfOf(b),
		Aead:              backupv1.BackupAead(b.GetAead()),
		CiphertextSize:    uint32(len(b.GetCiphertext())),
		RemainingAttempts: min(rec.GetRemainingAttempts(), s.maxAttempts),
		MaxAttempts:       s.maxAttempts,
		UpdatedAt:         b.GetStoredAt(),
	}
}

func kdfOf(b *backupstoragev1.BackupStoredRecord) *backupv1.Argon2IdParams {
	return &backupv1.Argon2IdParams{
		Time:      b.GetArgon2IdTime(),
		MemoryKib: b.GetArgon2IdMemoryKib(),
		Threads:   b.GetArgon2IdThreads(),
		Salt:      b.GetArgon2IdSalt(),
	}
}
