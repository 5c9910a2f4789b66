package group

import (
	"crypto/rand"
	"io"
	"time"

	"github.com/umbra-e2ee/umbra/internal/defaults"
)

// Defaults of Config.
const (
	DefaultInvitationTTL     = 7 * 24 * time.Hour
	DefaultMaxMembers        = 10000
	DefaultMaxBans           = 10000
	DefaultMaxJoinRequests   = 10000
	DefaultMaxInvitations    = 10000
	DefaultRotationPeriod    = 7 * 24 * time.Hour
	DefaultMaxMessages       = 100000
	DefaultUploadTTL         = 10 * time.Minute
	DefaultCardPollInterval  = 2 * time.Second
	DefaultSweepInterval     = 30 * time.Second
	DefaultOutboxPoll        = 5 * time.Second
	DefaultPeerTimeout       = 10 * time.Second
	DefaultExpiredInviteKeep = 7 * 24 * time.Hour
	DefaultCallRate          = 20
	DefaultCallBurst         = 200
)

// Config tunes the group service. The zero value of each field means its default.
type Config struct {
	// InvitationTTL is how long an invitation stays open when the request names no
	// ttl (default 7 days).
	InvitationTTL time.Duration
	// MaxMembers bounds a group's members (default 10,000); MaxBans, MaxJoinRequests
	// and MaxInvitations bound its bans, pending join requests and invitations (default
	// 10,000 each).
	MaxMembers      int
	MaxBans         int
	MaxJoinRequests int
	MaxInvitations  int
	// RotationPeriod and MaxMessagesPerEpoch are the rotation policy of a group created
	// without one (default 7 days and 100,000 messages).
	RotationPeriod      time.Duration
	MaxMessagesPerEpoch uint64
	// UploadTTL is how long a StageEpochKeys upload lives after its last chunk
	// (default 10 minutes).
	UploadTTL time.Duration
	// CardPollInterval is how often the card follower asks the card service for new
	// events once it has caught up (default 2 s).
	CardPollInterval time.Duration
	// SweepInterval is how often elapsed rotation periods, expired uploads and old
	// expired invitations are looked for (default 30 s).
	SweepInterval time.Duration
	// OutboxPoll is how often the outbox is retried after a failed delivery, at most
	// (default 5 s); new events are delivered at once.
	OutboxPoll time.Duration
	// PeerTimeout bounds each call to the card and messaging services (default 10 s).
	PeerTimeout time.Duration
	// ExpiredInvitationKeep is how long an expired invitation is kept, so that accepting
	// it gets "expired" rather than "not found" (default 7 days).
	ExpiredInvitationKeep time.Duration
	// CallRate and CallBurst limit the calls one identity makes to the group service,
	// all methods together (default 20 per second on average, 200 at once): a client
	// that loops on them is refused with RESOURCE_EXHAUSTED before it costs the
	// service a transaction. The other services' calls (membership checks for the
	// messaging service) are not counted.
	CallRate  float64
	CallBurst int
	// Clock and Rand default to time.Now and crypto/rand.
	Clock func() time.Time
	Rand  io.Reader
}

// withDefaults fills in the default of every zero field. Every value is valid (a
// negative one means its default too), so it returns no error today.
func (c Config) withDefaults() (Config, error) {
	defaults.Positive(&c.InvitationTTL, DefaultInvitationTTL)
	defaults.Positive(&c.MaxMembers, DefaultMaxMembers)
	defaults.Positive(&c.MaxBans, DefaultMaxBans)
	defaults.Positive(&c.MaxJoinRequests, DefaultMaxJoinRequests)
	defaults.Positive(&c.MaxInvitations, DefaultMaxInvitations)
	defaults.Positive(&c.RotationPeriod, DefaultRotationPeriod)
	defaults.Set(&c.MaxMessagesPerEpoch, DefaultMaxMessages)
	defaults.Positive(&c.UploadTTL, DefaultUploadTTL)
	defaults.Positive(&c.CardPollInterval, DefaultCardPollInterval)
	defaults.Positive(&c.SweepInterval, DefaultSweepInterval)
	defaults.Positive(&c.OutboxPoll, DefaultOutboxPoll)
	defaults.Positive(&c.PeerTimeout, DefaultPeerTimeout)
	defaults.Positive(&c.ExpiredInvitationKeep, DefaultExpiredInviteKeep)
	defaults.Positive(&c.CallRate, DefaultCallRate)
	defaults.Positive(&c.CallBurst, DefaultCallBurst)
	defaults.Clock(&c.Clock)
	defaults.Set(&c.Rand, rand.Reader)
	return c, nil
}
