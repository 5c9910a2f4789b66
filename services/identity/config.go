package identity

import (
	"crypto/rand"
	"io"
	"time"

	"github.com/umbra-e2ee/umbra/internal/defaults"
	"github.com/umbra-e2ee/umbra/pkg/auth"
)

// Config tunes a Server. The zero value is usable.
type Config struct {
	// Issuer is the tokens' "iss"; empty means auth.DefaultIssuer.
	Issuer string
	// DefaultTTL is the lifetime of a token issued without one; 0 means 1 h.
	DefaultTTL time.Duration
	// Clock and Rand default to time.Now and crypto/rand.
	Clock func() time.Time
	Rand  io.Reader
}

// withDefaults fills in cfg's defaults. No value is refused today; the error is there
// so that every service's configuration is checked the same way.
func (cfg Config) withDefaults() (Config, error) {
	defaults.Set(&cfg.Issuer, auth.DefaultIssuer)
	defaults.Set(&cfg.DefaultTTL, auth.DefaultTokenTTL)
	defaults.Clock(&cfg.Clock)
	defaults.Set(&cfg.Rand, rand.Reader)
	return cfg, nil
}
