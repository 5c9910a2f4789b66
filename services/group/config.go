package group

import "time"

// Config tunes the group service. The zero value of each field means its default.
type Config struct {
	// InvitationTTL is how long an invitation stays open (default 7 days).
	InvitationTTL time.Duration
}
