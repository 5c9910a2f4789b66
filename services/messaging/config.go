package messaging

import (
	"fmt"
	"time"

	"github.com/umbra-e2ee/umbra/internal/defaults"
	"github.com/umbra-e2ee/umbra/pkg/auth"
)

// Defaults of Config.
const (
	DefaultMaxEnvelopeBytes = 256 << 10
	// MaxEnvelopeLimit caps Config.MaxEnvelopeBytes: a message must fit in a gRPC
	// message (4 MiB) with room to spare.
	MaxEnvelopeLimit = 3 << 20
	DefaultRetention = 30 * 24 * time.Hour
	// DefaultSendRate and DefaultSendBurst limit Send per identity: far above what a
	// person types, and still a bound on a client gone wrong.
	DefaultSendRate      = 50
	DefaultSendBurst     = 200
	DefaultMaxStreams    = 16
	DefaultSweepInterval = time.Minute
)

// Config tunes a Server. The zero value is usable.
type Config struct {
	// MaxEnvelopeBytes bounds an envelope; 0 means DefaultMaxEnvelopeBytes, at most
	// MaxEnvelopeLimit.
	MaxEnvelopeBytes int
	// SendRate is how many messages per second one identity may send on average, and
	// SendBurst how many at once; 0 means the defaults.
	SendRate  float64
	SendBurst int
	// Retention is how long messages and events are kept; 0 means DefaultRetention.
	Retention time.Duration
	// MaxStreamsPerIdentity bounds the open Subscribe streams of one identity, and
	// separately its open SendStreams; 0 means DefaultMaxStreams.
	MaxStreamsPerIdentity int
	// SweepInterval is how often expired messages are deleted; 0 means
	// DefaultSweepInterval.
	SweepInterval time.Duration
	// DeliveryCacheBytes bounds the recent items the service keeps in memory so that
	// streams that have caught up take new items without reading them back from the
	// store: all streams together, each item counted once; 0 means
	// DefaultDeliveryCacheBytes, and a negative value keeps none (every stream reads
	// the store).
	DeliveryCacheBytes int64
	// Revocations, when set, is checked by every open stream every RevocationCheck, so
	// that a stream ends once its token is revoked ("log out everywhere"), not only when
	// it expires. Without it a stream lasts until its token expires.
	Revocations auth.RevocationChecker
	// CardRecheck is how long a sender card's status, once looked up, is trusted (a
	// revoked card is refused at most this long after its revocation); 0 means
	// DefaultCardRecheck. CardCacheSize bounds the cards whose owner is remembered; 0
	// means DefaultCardCacheSize.
	CardRecheck   time.Duration
	CardCacheSize int
	// Clock defaults to time.Now.
	Clock func() time.Time
}

// RevocationCheck is how often an open stream asks Config.Revocations about its token.
const RevocationCheck = 2 * time.Second

// withDefaults returns c with its zero fields set to their defaults, or an error naming
// the values out of range.
func (c Config) withDefaults() (Config, error) {
	defaults.Set(&c.CardRecheck, DefaultCardRecheck)
	defaults.Set(&c.CardCacheSize, DefaultCardCacheSize)
	defaults.Set(&c.MaxEnvelopeBytes, DefaultMaxEnvelopeBytes)
	defaults.Set(&c.SendRate, DefaultSendRate)
	defaults.Set(&c.SendBurst, DefaultSendBurst)
	defaults.Set(&c.Retention, DefaultRetention)
	defaults.Set(&c.MaxStreamsPerIdentity, DefaultMaxStreams)
	defaults.Set(&c.SweepInterval, DefaultSweepInterval)
	defaults.Set(&c.DeliveryCacheBytes, DefaultDeliveryCacheBytes)
	defaults.Clock(&c.Clock)
	switch {
	case c.MaxEnvelopeBytes < 1 || c.MaxEnvelopeBytes > MaxEnvelopeLimit:
		return c, fmt.Errorf("messaging: envelope limit %d bytes: want 1 to %d", c.MaxEnvelopeBytes, MaxEnvelopeLimit)
	case c.Retention < 0, c.SweepInterval < 0, c.MaxStreamsPerIdentity < 0:
		return c, fmt.Errorf("messaging: retention %s, sweep interval %s, streams %d: want positive values",
			c.Retention, c.SweepInterval, c.MaxStreamsPerIdentity)
	case c.CardRecheck < 0, c.CardCacheSize < 2:
		return c, fmt.Errorf("messaging: card recheck %s, card cache size %d: want a positive duration and at least 2 cards",
			c.CardRecheck, c.CardCacheSize)
	}
	return c, nil
}
