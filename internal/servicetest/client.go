package servicetest

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// As returns a context carrying cred as the bearer credential, or none when cred is
// empty.
func As(cred string) context.Context {
	ctx := context.Background()
	if cred == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cred)
}

// AsService returns a context carrying token as the service credential.
func AsService(token string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), auth.ServiceTokenHeader, token)
}

// NewApp creates an app named name as the admin, and returns its id and API key.
func NewApp(t testing.TB, ids identityv1.IdentityServiceClient, name string) (id, key string) {
	t.Helper()
	resp, err := ids.CreateApp(As(Admin), &identityv1.CreateAppRequest{DisplayName: name})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetApp().GetAppId(), resp.GetApiKey()
}

// resolveBatch is how many uids Resolve asks for at once.
const resolveBatch = 1000

// Resolve resolves uids in the app of appKey and returns their identities, in the
// order of uids.
func Resolve(t testing.TB, ids identityv1.IdentityServiceClient, appKey string, uids ...string) []string {
	t.Helper()
	out := make([]string, 0, len(uids))
	for batch := range slices.Chunk(uids, resolveBatch) {
		resp, err := ids.ResolveIdentities(As(appKey), &identityv1.ResolveIdentitiesRequest{Uids: batch})
		if err != nil {
			t.Fatal(err)
		}
		for _, uid := range batch {
			out = append(out, resp.GetUsers()[uid])
		}
	}
	return out
}

// ResolveGroup resolves guid, a group's id in the app of appKey, and returns its
// identity.
func ResolveGroup(t testing.TB, ids identityv1.IdentityServiceClient, appKey, guid string) string {
	t.Helper()
	resp, err := ids.ResolveIdentities(As(appKey), &identityv1.ResolveIdentitiesRequest{Guids: []string{guid}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetGroups()[guid]
}

// Token issues, with appKey, an access token for identity that lives ttl (0: the
// default).
func Token(t testing.TB, ids identityv1.IdentityServiceClient, appKey, identity string, ttl time.Duration) string {
	t.Helper()
	req := &identityv1.IssueTokenRequest{Identity: identity}
	if ttl > 0 {
		req.Ttl = durationpb.New(ttl)
	}
	resp, err := ids.IssueToken(As(appKey), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetAccessToken()
}

// Refusal is a gRPC call that must be refused with Code and a message that contains Msg
// (WantCode). As RESTRefusal, it names a struct type so that the services' tables list
// their cases unkeyed.
type Refusal = struct {
	Name string
	Call func() error
	Code codes.Code
	Msg  string
}

// Call returns a call of a client's unary method with req as the caller of ctx, which
// returns only the call's error: a Refusal's Call, one line a case.
func Call[Req, Resp any](method func(context.Context, Req, ...grpc.CallOption) (Resp, error), ctx context.Context, req Req) func() error {
	return func() error {
		_, err := method(ctx, req)
		return err
	}
}

// CheckRefusals makes each case's call in a subtest and checks that it is refused as
// the case says and that it wrote nothing: snapshot is the same after it.
func CheckRefusals(t *testing.T, cases []Refusal, snapshot func(t testing.TB) map[string]string) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			before := snapshot(t)
			WantCode(t, tc.Call(), tc.Code, tc.Msg)
			if !maps.Equal(before, snapshot(t)) {
				t.Error("the refused request changed the store")
			}
		})
	}
}

// WantCode fails the test unless err has code and a message that contains msg, in any
// case.
func WantCode(t testing.TB, err error, code codes.Code, msg string) {
	t.Helper()
	if st, ok := hasCode(err, code, msg); !ok {
		t.Errorf("got %v %q; want %v with %q", st.Code(), st.Message(), code, msg)
	}
}

// MustCode is WantCode that stops the test on a mismatch, for a test whose next steps
// rely on the refusal.
func MustCode(t testing.TB, err error, code codes.Code, msg string) {
	t.Helper()
	if st, ok := hasCode(err, code, msg); !ok {
		t.Fatalf("got %v %q; want %v with %q", st.Code(), st.Message(), code, msg)
	}
}

// hasCode returns err's status and whether it has code and a message that contains
// msg, in any case.
func hasCode(err error, code codes.Code, msg string) (*status.Status, bool) {
	st, _ := status.FromError(err)
	return st, st.Code() == code && strings.Contains(strings.ToLower(st.Message()), strings.ToLower(msg))
}
