// Package auth authenticates every RPC against one policy table per service, and fails
// closed: a method without an entry is refused.
//
// The policies are Public (no credential), Admin (the operator's admin credential),
// AppKey (an app's API key: the app backend), AccessToken (a JWT the identity service
// issued for one identity of one app) and Internal (another Umbra service, proven by its
// mTLS certificate's name or by the service token). The authenticated caller travels in
// the context as a *Principal.
package auth

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Policy says which credential a method requires.
type Policy int

// The policies. The zero value is no policy, which Authenticate refuses.
const (
	Public Policy = iota + 1
	Admin
	AppKey
	AccessToken
	Internal
)

func (p Policy) String() string {
	switch p {
	case Public:
		return "public"
	case Admin:
		return "admin"
	case AppKey:
		return "app-key"
	case AccessToken:
		return "access-token"
	case Internal:
		return "internal"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Table maps full gRPC method names ("/umbra.identity.v1.IdentityService/IssueToken") to
// their policy.
type Table map[string]Policy

// Merge combines the tables of the services one server hosts. A method named twice is a
// programming error.
func Merge(tables ...Table) (Table, error) {
	out := Table{}
	for _, t := range tables {
		for m, p := range t {
			if _, dup := out[m]; dup {
				return nil, fmt.Errorf("auth: method %s has two policies", m)
			}
			out[m] = p
		}
	}
	return out, nil
}

// Principal is who a call acts for.
type Principal struct {
	Policy Policy
	// AppID is the app of an access token or an app key.
	AppID string
	// Identity is the identity an access token acts for.
	Identity string
	// TokenID, IssuedAt and ExpiresAt describe an access token.
	TokenID   string
	IssuedAt  time.Time
	ExpiresAt time.Time
	// AppKeyID is the id of the app key that authenticated the call.
	AppKeyID string
	// Service names the internal caller: its certificate's name, or "service-token".
	Service string
}

type principalKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal the interceptor authenticated, if any.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

// Caller returns the principal of a handler's call. The interceptor always sets one,
// so its absence is a programming error (a method served without the interceptor),
// which the error says.
func Caller(ctx context.Context) (*Principal, error) {
	p, ok := FromContext(ctx)
	if !ok {
		return nil, errors.New("auth: no principal in context")
	}
	return p, nil
}

// User is Caller for methods that act for a user: it also refuses a principal without
// an app and identity, which an access-token policy never lets through.
func User(ctx context.Context) (*Principal, error) {
	p, err := Caller(ctx)
	if err == nil && (p.AppID == "" || p.Identity == "") {
		err = errors.New("auth: no user identity in context")
	}
	return p, err
}
