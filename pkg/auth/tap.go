package auth

import (
	"context"
	"encoding/base64"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/tap"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/errs/errstatus"
)

// AppKeyPrefix starts every app API key: "uak_<key id>_<secret>".
const AppKeyPrefix = "uak_"

// MaxCredentialLen bounds a credential header: far above an access token (under 1 KiB)
// or an app key.
const MaxCredentialLen = 8 << 10

// TapHandle returns a gRPC tap handle (grpc.InTapHandle) that refuses a call before its
// body is read, while gRPC has only its headers, when the method's policy needs a
// credential and the call carries none of the right shape: an access token that is not
// three base64url parts, an app key without its prefix, an internal call with neither a
// verified service certificate nor a service token. It also refuses sources that have
// failed too often (see Config.Failures). The full check stays in the interceptors;
// this one only keeps calls that cannot succeed from costing memory.
//
// A tap handle runs on the connection's reader goroutine, so it does nothing that
// blocks: no lookups, no signature checks.
func (a *Authenticator) TapHandle() tap.ServerInHandle {
	return func(ctx context.Context, info *tap.Info) (context.Context, error) {
		if err := a.tap(ctx, info.FullMethodName, info.Header); err != nil {
			st, _ := errstatus.Status(err)
			return ctx, st
		}
		return ctx, nil
	}
}

func (a *Authenticator) tap(ctx context.Context, method string, md metadata.MD) error {
	policy, ok := a.cfg.Policies[method]
	if !ok || policy == Public {
		// A method without a policy is refused by the interceptor (or does not exist,
		// and gRPC answers Unimplemented without reading its body).
		return nil
	}
	if policy == Internal {
		if _, ok := a.verifiedPeer(ctx); ok {
			return nil
		}
		vals := md.Get(ServiceTokenHeader)
		if a.serviceHash == nil || len(vals) != 1 || !plausibleSecret(vals[0]) {
			return errs.Permissionf("internal method: only Umbra services may call it")
		}
		return a.failures.check(Internal, a.source(ctx, md.Get))
	}
	cred, err := bearerOf(md.Get(AuthorizationHeader))
	if err != nil {
		return err
	}
	switch policy {
	case AccessToken:
		if !plausibleJWT(cred) {
			return errs.Unauthenticatedf("access token is malformed")
		}
		return nil
	case AppKey:
		if !strings.HasPrefix(cred, AppKeyPrefix) || !plausibleSecret(cred) {
			return errs.Unauthenticatedf("malformed app API key: want %s<key id>_<secret>", AppKeyPrefix)
		}
	case Admin:
		if !plausibleSecret(cred) {
			return errs.Unauthenticatedf("malformed admin credential")
		}
	}
	return a.failures.check(policy, a.source(ctx, md.Get))
}

// plausibleSecret is a credential of printable ASCII within MaxCredentialLen.
func plausibleSecret(s string) bool {
	if s == "" || len(s) > MaxCredentialLen {
		return false
	}
	for i := range len(s) {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// plausibleJWT is a compact JWS: three base64url parts, the first a JSON object. (An
// empty signature passes, so that the verifier can say plainly that "alg": "none" is
// refused.)
func plausibleJWT(s string) bool {
	if len(s) > MaxCredentialLen {
		return false
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return false
	}
	for _, p := range parts {
		if strings.ContainsFunc(p, func(r rune) bool {
			return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
		}) {
			return false
		}
	}
	head, err := base64.RawURLEncoding.DecodeString(parts[0])
	return err == nil && len(head) > 0 && head[0] == '{'
}
