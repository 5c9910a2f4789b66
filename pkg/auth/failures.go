package auth

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net"
	"net/netip"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ratelimit"
)

// Headers with which a trusted forwarder (the REST gateway) tells a service who its
// client is. A service believes ClientAddrHeader only on a call that also carries the
// forwarder token (Config.ForwarderToken); the gateway drops both from what its
// clients send.
const (
	ClientAddrHeader     = "x-umbra-client-addr"
	ForwarderTokenHeader = "x-umbra-forwarder-token"
)

// FailureLimit bounds failed credentials per source, for app keys, the admin
// credential and the service token, each kind apart. Each source has Burst failures
// of each kind, refilled at one per Refill; a source with none left is refused calls
// that need that kind of credential, without the credential being checked, until one
// has come back.
type FailureLimit struct {
	// Burst is how many failures a source may have at once; 0 means
	// DefaultFailureBurst, and a negative value turns the limit off.
	Burst int
	// Refill is how long one failure takes to be forgiven; 0 (or less) means
	// DefaultFailureRefill.
	Refill time.Duration
	// MaxSources bounds the sources remembered; 0 (or less) means
	// DefaultFailureSources. When full, the least recently seen source is forgotten.
	MaxSources int
	// Clock is the time source; nil means time.Now.
	Clock func() time.Time
}

// Defaults of FailureLimit: 10 failures at once, then one every 6 seconds (10 a
// minute), for up to 100,000 sources (a few megabytes).
const (
	DefaultFailureBurst   = 10
	DefaultFailureRefill  = 6 * time.Second
	DefaultFailureSources = 100_000
)

// failures counts failed credentials per source. The zero value (nil limiter) limits
// nothing.
type failures struct {
	l *ratelimit.Limiter
}

func newFailures(c FailureLimit) failures {
	if c.Burst < 0 {
		return failures{}
	}
	if c.Burst == 0 {
		c.Burst = DefaultFailureBurst
	}
	if c.Refill <= 0 {
		c.Refill = DefaultFailureRefill
	}
	if c.MaxSources == 0 {
		c.MaxSources = DefaultFailureSources
	}
	if c.MaxSources < 0 {
		c.MaxSources = DefaultFailureSources
	}
	l, err := ratelimit.New(ratelimit.Config{Rate: 1 / c.Refill.Seconds(), Burst: c.Burst, MaxKeys: c.MaxSources, Clock: c.Clock})
	if err != nil { // the values above are valid: a programming error
		panic(fmt.Sprintf("auth: failure limit: %v", err))
	}
	return failures{l: l}
}

// check refuses a source that has no failures of a policy's credential left. Each
// kind of credential (app key, admin credential, service token) counts apart, so that
// a client guessing app keys does not lock out the services' internal calls from the
// same address (in `umbra dev` everything is 127.0.0.1).
func (f failures) check(policy Policy, source string) error {
	if f.l == nil {
		return nil
	}
	if ok, retry := f.l.Available(failureKey(policy, source)); !ok {
		return errs.Exhaustedf("too many failed %s credentials from your address: retry in %s", policy, retry.Round(time.Second))
	}
	return nil
}

// record counts one failure of a source.
func (f failures) record(policy Policy, source string) {
	if f.l != nil {
		f.l.Allow(failureKey(policy, source))
	}
}

func failureKey(policy Policy, source string) string { return policy.String() + " " + source }

// source names where a call comes from, for the failure limit: the client address a
// trusted forwarder vouches for, or else the peer's address. IPv6 addresses count per
// /64, the block one host or home usually has.
//
// header reads a header of the call (its values).
func (a *Authenticator) source(ctx context.Context, header func(string) []string) string {
	if addrs := header(ClientAddrHeader); len(addrs) == 1 && a.forwarder(ctx, header) {
		if ip, err := netip.ParseAddr(addrs[0]); err == nil {
			return sourceOf(ip)
		}
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	return sourceOf(ip)
}

// forwarder reports whether a call comes from a trusted forwarder: it carries the
// forwarder token, or its verified certificate is one of Config.ForwarderPeers.
func (a *Authenticator) forwarder(ctx context.Context, header func(string) []string) bool {
	if toks := header(ForwarderTokenHeader); a.forwarderHash != nil && len(toks) == 1 &&
		subtle.ConstantTimeCompare(hash(toks[0]), a.forwarderHash) == 1 {
		return true
	}
	if len(a.cfg.ForwarderPeers) == 0 {
		return false
	}
	cert, ok := verifiedCert(ctx)
	return ok && certNamed(cert, a.cfg.ForwarderPeers)
}

func sourceOf(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		return netip.PrefixFrom(ip, 64).Masked().String()
	}
	return ip.String()
}

// sourceFromContext is source for the interceptors, which read the metadata from ctx
// (a header at a time: copying it all costs more).
func (a *Authenticator) sourceFromContext(ctx context.Context) string {
	return a.source(ctx, func(k string) []string { return metadata.ValueFromIncomingContext(ctx, k) })
}
