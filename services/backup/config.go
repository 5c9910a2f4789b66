package backup

import (
	"fmt"
	"time"

	"github.com/umbra-e2ee/umbra/internal/defaults"
)

// Defaults of Config.
const (
	// DefaultMaxAttempts is each slot's budget of password guesses.
	DefaultMaxAttempts = 10
	// MaxMaxAttempts bounds Config.MaxAttempts: a larger budget would let a live
	// attacker guess more than a password of modest strength can bear.
	MaxMaxAttempts = 1000
	// DefaultEvaluateRate and DefaultEvaluateBurst limit Evaluate per identity.
	DefaultEvaluateRate  = 1.0
	DefaultEvaluateBurst = 20
	// MinSecretBytes is the shortest server secret accepted.
	MinSecretBytes = 32
	// DefaultOutboxRetry is how long the event outbox waits before it tries again
	// after the messaging service failed to take an event.
	DefaultOutboxRetry = time.Second
)

// Config tunes the backup service. The zero value of each field but Secret means its
// default.
type Config struct {
	// Secret is the server secret every OPRF key is derived from. It is never stored
	// in backup.db: a copy of the database without it cannot be attacked offline. At
	// least MinSecretBytes; required.
	Secret []byte
	// MaxAttempts is each slot's budget of failed restores before it is erased.
	MaxAttempts int
	// EvaluateRate (per second) and EvaluateBurst limit Evaluate per identity.
	EvaluateRate  float64
	EvaluateBurst int
	// KeyCacheSize is how many derived OPRF keys are kept in memory; 0 means
	// DefaultKeyCacheSize, a negative value keeps none.
	KeyCacheSize int
	// OutboxRetry is the first wait before the outbox retries a failed delivery (it
	// doubles up to a minute); 0 means DefaultOutboxRetry.
	OutboxRetry time.Duration
	// Clock defaults to time.Now.
	Clock func() time.Time
}

// withDefaults checks cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, error) {
	if len(cfg.Secret) == 0 {
		return cfg, fmt.Errorf("backup: no server secret: the backup service needs one of at least %d bytes (umbra serve: --backup-secret-file or UMBRA_BACKUP_SECRET; make one with: head -c 32 /dev/urandom | base64)", MinSecretBytes)
	}
	if len(cfg.Secret) < MinSecretBytes {
		return cfg, fmt.Errorf("backup: the server secret is %d bytes; at least %d are required (umbra serve: --backup-secret-file or UMBRA_BACKUP_SECRET; make one with: head -c 32 /dev/urandom | base64)", len(cfg.Secret), MinSecretBytes)
	}
	switch {
	case cfg.MaxAttempts == 0:
		cfg.MaxAttempts = DefaultMaxAttempts
	case cfg.MaxAttempts < 0 || cfg.MaxAttempts > MaxMaxAttempts:
		return cfg, fmt.Errorf("backup: max attempts %d: want 1 to %d", cfg.MaxAttempts, MaxMaxAttempts)
	}
	defaults.Set(&cfg.EvaluateRate, DefaultEvaluateRate)
	defaults.Set(&cfg.EvaluateBurst, DefaultEvaluateBurst)
	defaults.Set(&cfg.KeyCacheSize, DefaultKeyCacheSize)
	defaults.Set(&cfg.OutboxRetry, DefaultOutboxRetry)
	if cfg.OutboxRetry < 0 {
		return cfg, fmt.Errorf("backup: outbox retry %s: want a positive duration", cfg.OutboxRetry)
	}
	defaults.Clock(&cfg.Clock)
	return cfg, nil
}
