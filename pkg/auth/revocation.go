package auth

import (
	"context"
	"sync"
	"time"

	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// RevocationSource pages through the identity service's revocation feed.
type RevocationSource interface {
	ListRevocations(ctx context.Context, req *identityv1.ListRevocationsRequest) (*identityv1.ListRevocationsResponse, error)
}

// Defaults for a RevocationFeed. Together they are the bound in docs/architecture.md: a
// revocation is honoured everywhere within PollInterval of being made while the identity
// service answers, and a service that has not heard from it for MaxStaleness refuses
// access tokens rather than honour a revoked one.
const (
	DefaultRevocationPoll  = 2 * time.Second
	DefaultRevocationStale = 30 * time.Second
)

// RevocationFeed is the RevocationChecker of every service but identity: it keeps a
// copy of the revocation feed, polled every PollInterval, and fails closed when the copy
// is older than MaxStaleness.
type RevocationFeed struct {
	src          RevocationSource
	now          func() time.Time
	PollInterval time.Duration
	MaxStaleness time.Duration

	mu       sync.RWMutex
	after    uint64
	before   map[string]time.Time // app \x00 identity -> revoked before
	maxTTL   time.Duration
	syncedAt time.Time
}

// NewRevocationFeed returns a feed over src. now may be nil for time.Now.
func NewRevocationFeed(src RevocationSource, now func() time.Time) *RevocationFeed {
	if now == nil {
		now = time.Now
	}
	return &RevocationFeed{
		src:          src,
		now:          now,
		PollInterval: DefaultRevocationPoll,
		MaxStaleness: DefaultRevocationStale,
		before:       map[string]time.Time{},
		maxTTL:       MaxTokenTTL,
	}
}

// Run polls until ctx ends. Failures are retried at the next tick; a feed that keeps
// failing goes stale and CheckRevoked says so.
func (f *RevocationFeed) Run(ctx context.Context) {
	t := time.NewTicker(f.PollInterval)
	defer t.Stop()
	for {
		_ = f.Sync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sync pulls every entry after the last one seen.
func (f *RevocationFeed) Sync(ctx context.Context) error {
	start := f.now()
	f.mu.RLock()
	after := f.after
	f.mu.RUnlock()
	for {
		resp, err := f.src.ListRevocations(ctx, &identityv1.ListRevocationsRequest{AfterSequence: after})
		if err != nil {
			return err
		}
		f.mu.Lock()
		for _, r := range resp.GetRevocations() {
			k := revocationKey(r.GetAppId(), r.GetIdentity())
			if b := r.GetBefore().AsTime(); b.After(f.before[k]) {
				f.before[k] = b
			}
			f.after = max(f.after, r.GetSequence())
		}
		if d := resp.GetMaxTokenTtl(); d != nil && d.AsDuration() > 0 {
			f.maxTTL = d.AsDuration()
		}
		after = f.after
		done := len(resp.GetRevocations()) == 0 || after >= resp.GetLatestSequence()
		if done {
			f.prune()
			f.syncedAt = start
		}
		f.mu.Unlock()
		if done {
			return nil
		}
	}
}

// prune drops revocations older than any token still alive. f.mu is held.
func (f *RevocationFeed) prune() {
	cutoff := f.now().Add(-f.maxTTL - Leeway)
	for k, b := range f.before {
		if b.Before(cutoff) {
			delete(f.before, k)
		}
	}
}

// CheckRevoked implements RevocationChecker.
func (f *RevocationFeed) CheckRevoked(_ context.Context, app, identity string, issuedAt time.Time) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.syncedAt.IsZero() {
		return errs.Unavailablef("cannot confirm that the access token is not revoked: not yet in touch with the identity service")
	}
	if age := f.now().Sub(f.syncedAt); age > f.MaxStaleness {
		return errs.Unavailablef("cannot confirm that the access token is not revoked: no word from the identity service for %s", age.Round(time.Second))
	}
	if b, ok := f.before[revocationKey(app, identity)]; ok && issuedAt.Before(b) {
		return errs.Unauthenticatedf("access token has been revoked")
	}
	return nil
}

func revocationKey(app, identity string) string { return app + "\x00" + identity }
