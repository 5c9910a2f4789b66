package sdk

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TokenFunc returns a fresh access token for the user, typically by asking the app
// backend, which asks the identity service (IssueToken) after authenticating the user.
type TokenFunc func(ctx context.Context) (string, error)

// refreshMargin is how long before its expiry a token is replaced.
const refreshMargin = 30 * time.Second

// tokens caches the current token and fetches a new one when it is about to expire
// or a server refused it.
type tokens struct {
	fetch TokenFunc
	now   func() time.Time

	mu  sync.Mutex
	tok string
	exp time.Time
}

// get returns a usable token; stale forces a new one unless the cached one already
// differs from stale (another call refreshed it meanwhile).
func (t *tokens) get(ctx context.Context, stale string) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tok != "" && t.tok != stale && t.now().Add(refreshMargin).Before(t.exp) {
		return t.tok, nil
	}
	tok, err := t.fetch(ctx)
	if err != nil {
		return "", err
	}
	t.tok, t.exp = tok, tokenExpiry(tok, t.now())
	return tok, nil
}

// invalidate drops the cached token, so the next call fetches a fresh one.
func (t *tokens) invalidate() {
	t.mu.Lock()
	t.tok = ""
	t.mu.Unlock()
}

// tokenExpiry reads a JWT's exp claim without verifying it (the server verifies); a
// token it cannot read is used for a minute.
func tokenExpiry(tok string, now time.Time) time.Time {
	parts := strings.Split(tok, ".")
	if len(parts) == 3 {
		if payload, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
			var c struct {
				Exp int64 `json:"exp"`
			}
			if json.Unmarshal(payload, &c) == nil && c.Exp > 0 {
				return time.Unix(c.Exp, 0)
			}
		}
	}
	return now.Add(time.Minute + refreshMargin)
}

// interceptors attach the token to every call, and retry a call once with a new token
// when the server says the one sent is not (or no longer) valid.
func (t *tokens) interceptors() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			tok, err := t.get(ctx, "")
			if err != nil {
				return err
			}
			err = invoker(withBearer(ctx, tok), method, req, reply, cc, opts...)
			if status.Code(err) != codes.Unauthenticated {
				return err
			}
			fresh, ferr := t.get(ctx, tok)
			if ferr != nil || fresh == tok {
				return err
			}
			return invoker(withBearer(ctx, fresh), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			tok, err := t.get(ctx, "")
			if err != nil {
				return nil, err
			}
			return streamer(withBearer(ctx, tok), desc, cc, method, opts...)
		}),
	}
}

func withBearer(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}
