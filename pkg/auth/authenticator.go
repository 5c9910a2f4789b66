package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// Header names. The gateway forwards only AuthorizationHeader; ServiceTokenHeader is
// never accepted from outside.
const (
	AuthorizationHeader = "authorization"
	ServiceTokenHeader  = "x-umbra-service-token"
)

// TokenVerifier checks an access token and returns its principal.
type TokenVerifier interface {
	VerifyToken(ctx context.Context, token string) (*Principal, error)
}

// AppKeyVerifier checks an app API key and returns its principal.
type AppKeyVerifier interface {
	VerifyAppKey(ctx context.Context, key string) (*Principal, error)
}

// Config is what an Authenticator checks credentials against. Each credential left
// unset turns its policy off: methods that require it are refused.
type Config struct {
	Policies Table
	Tokens   TokenVerifier
	AppKeys  AppKeyVerifier
	// AdminCredential is the operator's secret for admin methods.
	AdminCredential string
	// ServiceToken is the shared secret services present to each other's internal
	// methods when they do not use mTLS.
	ServiceToken string
	// ServicePeers are the certificate names (DNS SAN or common name) accepted as
	// internal callers over mTLS.
	ServicePeers []string
	// Failures limits failed app keys, admin credentials and service tokens per
	// source; the zero value is the defaults.
	Failures FailureLimit
	// ForwarderToken, when set, is the secret of the forwarders (the REST gateway)
	// whose ClientAddrHeader names the source of a call for the failure limit; and
	// ForwarderPeers are the certificate names of forwarders trusted over mTLS. On a
	// call from neither, the source is the peer's address.
	ForwarderToken string
	ForwarderPeers []string
}

// Authenticator enforces a policy table.
type Authenticator struct {
	cfg           Config
	adminHash     []byte
	serviceHash   []byte
	forwarderHash []byte
	servicePeers  []string
	failures      failures
}

// New returns an Authenticator for cfg.
func New(cfg Config) *Authenticator {
	a := &Authenticator{cfg: cfg, servicePeers: slices.Clone(cfg.ServicePeers), failures: newFailures(cfg.Failures)}
	if cfg.AdminCredential != "" {
		a.adminHash = hash(cfg.AdminCredential)
	}
	if cfg.ServiceToken != "" {
		a.serviceHash = hash(cfg.ServiceToken)
	}
	if cfg.ForwarderToken != "" {
		a.forwarderHash = hash(cfg.ForwarderToken)
	}
	return a
}

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// Policies returns the table the Authenticator enforces.
func (a *Authenticator) Policies() Table { return a.cfg.Policies }

// Authenticate checks the credentials in ctx's incoming metadata against the policy of
// method, and returns the principal.
func (a *Authenticator) Authenticate(ctx context.Context, method string) (*Principal, error) {
	policy, ok := a.cfg.Policies[method]
	if !ok {
		return nil, errs.Permissionf("method %s has no access policy and is refused", method)
	}
	switch policy {
	case Public:
		return &Principal{Policy: Public}, nil
	case Internal:
		return a.internal(ctx)
	}
	cred, err := bearer(ctx)
	if err != nil {
		return nil, err
	}
	switch policy {
	case Admin:
		if a.adminHash == nil {
			return nil, errs.Permissionf("admin methods are disabled: the server has no admin credential")
		}
		return a.guarded(ctx, Admin, func() (*Principal, error) {
			if subtle.ConstantTimeCompare(hash(cred), a.adminHash) != 1 {
				return nil, errs.Unauthenticatedf("invalid admin credential")
			}
			return &Principal{Policy: Admin}, nil
		})
	case AppKey:
		if a.cfg.AppKeys == nil {
			return nil, errs.Permissionf("this server does not accept app keys")
		}
		return a.guarded(ctx, AppKey, func() (*Principal, error) { return a.cfg.AppKeys.VerifyAppKey(ctx, cred) })
	case AccessToken:
		if a.cfg.Tokens == nil {
			return nil, errs.Permissionf("this server does not accept access tokens")
		}
		return a.cfg.Tokens.VerifyToken(ctx, cred)
	}
	return nil, errs.Permissionf("method %s has an unknown policy and is refused", method)
}

// bearer returns the single "Bearer" credential of the authorization header.
// bearer reads the credential of the authorization header (looked up alone: copying
// the whole metadata, as metadata.FromIncomingContext does, cost more than checking a
// cached token).
func bearer(ctx context.Context) (string, error) {
	return bearerOf(metadata.ValueFromIncomingContext(ctx, AuthorizationHeader))
}

// bearerOf reads the credential of the authorization header's values.
func bearerOf(vals []string) (string, error) {
	switch len(vals) {
	case 0:
		return "", errs.Unauthenticatedf("missing credential: send \"authorization: Bearer <token>\"")
	case 1:
	default:
		return "", errs.Unauthenticatedf("more than one authorization header")
	}
	scheme, cred, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", errs.Unauthenticatedf("authorization header is not of the form \"Bearer <token>\"")
	}
	cred = strings.TrimSpace(cred)
	if cred == "" {
		return "", errs.Unauthenticatedf("empty bearer credential")
	}
	return cred, nil
}

func (a *Authenticator) internal(ctx context.Context) (*Principal, error) {
	if name, ok := a.verifiedPeer(ctx); ok {
		return &Principal{Policy: Internal, Service: name}, nil
	}
	refused := errs.Permissionf("internal method: only Umbra services may call it")
	if a.serviceHash == nil {
		return nil, refused
	}
	vals := metadata.ValueFromIncomingContext(ctx, ServiceTokenHeader)
	if len(vals) != 1 {
		return nil, refused
	}
	return a.guarded(ctx, Internal, func() (*Principal, error) {
		if subtle.ConstantTimeCompare(hash(vals[0]), a.serviceHash) != 1 {
			return nil, refused
		}
		return &Principal{Policy: Internal, Service: "service-token"}, nil
	})
}

// guarded runs a check of a credential of policy under the failure limit of the
// call's source: a source with no failures of that kind left is refused without the
// check, and a check that finds the credential wrong (Unauthenticated or
// PermissionDenied; not a store that cannot answer) counts against its source.
func (a *Authenticator) guarded(ctx context.Context, policy Policy, check func() (*Principal, error)) (*Principal, error) {
	if a.failures.l == nil {
		return check()
	}
	src := a.sourceFromContext(ctx)
	if err := a.failures.check(policy, src); err != nil {
		return nil, err
	}
	p, err := check()
	if errors.Is(err, errs.ErrUnauthenticated) || errors.Is(err, errs.ErrPermission) {
		a.failures.record(policy, src)
	}
	return p, err
}

// verifiedPeer returns the name of the caller's client certificate when the TLS stack
// verified it against the client CA and the name is an allowed service.
func (a *Authenticator) verifiedPeer(ctx context.Context) (string, bool) {
	if len(a.servicePeers) == 0 {
		return "", false
	}
	cert, ok := verifiedCert(ctx)
	if !ok {
		return "", false
	}
	return peerName(cert, a.servicePeers)
}

// verifiedCert returns the caller's client certificate when the TLS stack verified it
// against the client CA.
func verifiedCert(ctx context.Context) (*x509.Certificate, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, false
	}
	return info.State.VerifiedChains[0][0], true
}

// peerName returns the first name of cert (DNS SANs, then the common name) in names.
func peerName(cert *x509.Certificate, names []string) (string, bool) {
	for _, name := range append(slices.Clone(cert.DNSNames), cert.Subject.CommonName) {
		if slices.Contains(names, name) {
			return name, true
		}
	}
	return "", false
}

func certNamed(cert *x509.Certificate, names []string) bool {
	_, ok := peerName(cert, names)
	return ok
}

// Preauthenticate authenticates a unary call before its request is read (gRPC reads
// and decodes a unary request before any interceptor runs), and returns ctx carrying
// the outcome, which UnaryInterceptor then takes instead of checking again. The server
// calls it from its method handlers (see grpcserver), so a call with a wrong credential
// is refused without its body ever being read.
func (a *Authenticator) Preauthenticate(ctx context.Context, method string) (context.Context, error) {
	p, err := a.Authenticate(ctx, method)
	return context.WithValue(ctx, preauthKey{}, &preauth{method: method, p: p, err: err}), err
}

type preauthKey struct{}

type preauth struct {
	method string
	p      *Principal
	err    error
}

// authenticateOnce is Authenticate, unless Preauthenticate has done it already.
func (a *Authenticator) authenticateOnce(ctx context.Context, method string) (*Principal, error) {
	if pa, ok := ctx.Value(preauthKey{}).(*preauth); ok && pa.method == method {
		return pa.p, pa.err
	}
	return a.Authenticate(ctx, method)
}

// UnaryInterceptor authenticates unary calls.
func (a *Authenticator) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		p, err := a.authenticateOnce(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		noteCaller(ctx, p)
		return handler(NewContext(ctx, p), req)
	}
}

// StreamInterceptor authenticates streaming calls.
func (a *Authenticator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		p, err := a.Authenticate(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		noteCaller(ss.Context(), p)
		return handler(srv, &principalStream{ServerStream: ss, ctx: NewContext(ss.Context(), p)})
	}
}

type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *principalStream) Context() context.Context { return s.ctx }

// CallerNote is a slot an outer interceptor (the logger) puts in the context, so it can
// report who called after the authenticator has run.
type CallerNote struct{ Principal *Principal }

type callerNoteKey struct{}

// WithCallerNote returns ctx with an empty note the authenticator will fill.
func WithCallerNote(ctx context.Context) (context.Context, *CallerNote) {
	n := &CallerNote{}
	return context.WithValue(ctx, callerNoteKey{}, n), n
}

func noteCaller(ctx context.Context, p *Principal) {
	if n, ok := ctx.Value(callerNoteKey{}).(*CallerNote); ok {
		n.Principal = p
	}
}
