package card

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"time"

	"github.com/umbra-e2ee/umbra/internal/defaults"
	"github.com/umbra-e2ee/umbra/pkg/auth"
)

// Defaults of Config.
const (
	// DefaultClockSkew is how far in the future a card's created_at may be.
	DefaultClockSkew = 5 * time.Minute
	// DefaultSearchRate and DefaultSearchBurst limit SearchCards per calling identity:
	// a client looks its contacts up in batches of up to 1,000, so ten calls a second
	// (10,000 identities) is far above any client's need and still bounds a scraper.
	DefaultSearchRate  = 10
	DefaultSearchBurst = 20
	// DefaultCheckpointInterval is how often the key transparency log appends the
	// new card events and publishes a checkpoint.
	DefaultCheckpointInterval = time.Second
)

// Config tunes a Server. The zero value is usable.
type Config struct {
	// ClockSkew is how far in the future a card's created_at may be; 0 means
	// DefaultClockSkew.
	ClockSkew time.Duration
	// SearchRate is how many SearchCards calls per second one identity may make on
	// average, and SearchBurst how many at once; 0 means the defaults.
	SearchRate  float64
	SearchBurst int
	// Clock and Rand default to time.Now and crypto/rand. Rand makes the service key
	// on first start.
	Clock func() time.Time
	Rand  io.Reader
	// Grants verifies reset grants (the process's access-token verifier does, with
	// the identity service's published keys). Without it every reset is refused.
	Grants GrantVerifier
	// CheckpointInterval is how often the key transparency log appends new card
	// events and signs a checkpoint; 0 means DefaultCheckpointInterval.
	CheckpointInterval time.Duration
	// LogOrigin names the key transparency log (the first line of its checkpoints,
	// and its log key's name), for example "kt.chat.example.com". Empty: the stored
	// origin, or "umbra/kt/<log key id>" for a new log. It is fixed when the log key
	// is made; a different one later is refused.
	LogOrigin string
}

// GrantVerifier verifies a reset grant's signature, type, audience and lifetime.
// *auth.Verifier is one. It is configuration (Config.Grants), not a peer of New: it is
// the process's token verifier, not a client of another service, and the service runs
// without one (refusing every reset).
type GrantVerifier interface {
	VerifyResetGrant(ctx context.Context, raw string) (*auth.ResetGrant, error)
}

// withDefaults checks cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, error) {
	defaults.Set(&cfg.ClockSkew, DefaultClockSkew)
	defaults.Set(&cfg.SearchRate, DefaultSearchRate)
	defaults.Set(&cfg.SearchBurst, DefaultSearchBurst)
	defaults.Set(&cfg.CheckpointInterval, DefaultCheckpointInterval)
	defaults.Clock(&cfg.Clock)
	defaults.Set(&cfg.Rand, rand.Reader)
	if cfg.ClockSkew < 0 {
		return cfg, fmt.Errorf("card: clock skew %s: want a positive duration", cfg.ClockSkew)
	}
	if cfg.CheckpointInterval < 0 {
		return cfg, fmt.Errorf("card: checkpoint interval %s: want a positive duration", cfg.CheckpointInterval)
	}
	return cfg, nil
}
