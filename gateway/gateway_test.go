package gateway_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	backupv1 "github.com/umbra-e2ee/umbra/proto/umbra/backup/v1"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
	"github.com/umbra-e2ee/umbra/services/card"
	"github.com/umbra-e2ee/umbra/services/group"
	"github.com/umbra-e2ee/umbra/services/identity"
	"github.com/umbra-e2ee/umbra/services/messaging"
)

const testAdmin = "test-admin-credential-0123456789"

// startNode runs every role the gateway fronts (today the identity service) with
// node.Run on a loopback port, as `umbra serve all` would without its gateway, and
// returns its gRPC address and a function that stops it and waits until Run has
// returned (it is also called on cleanup).
func startNode(t *testing.T, admin string) (string, func()) {
	t.Helper()
	addrs, stop := startNodeWith(t, admin, func(*node.Config) {})
	return addrs.GRPC, stop
}

// startNodeWith is startNode with its configuration adjusted by edit first, and returns
// every address the node serves.
func startNodeWith(t *testing.T, admin string, edit func(*node.Config)) (node.Addrs, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan node.Addrs, 1)
	done := make(chan error, 1)
	cfg := node.Config{
		Roles:           gateway.Services(),
		DataDir:         t.TempDir(),
		GRPC:            grpcserver.Config{Addr: "127.0.0.1:0"},
		AdminCredential: admin,
		// The services call each other's internal methods (group and messaging, group
		// and card), which need the service token.
		ServiceToken: "test-service-token-0123456789",
		Backup:       backup.Config{Secret: []byte("test-backup-secret-0123456789abcdef")},
		Ready: func(_ context.Context, addrs node.Addrs) error {
			ready <- addrs
			return nil
		},
	}
	edit(&cfg)
	log := zaptest.NewLogger(t)
	go func() { done <- node.Run(ctx, cfg, log) }()

	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("node.Run returned %v after its context ended; want nil", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case addrs := <-ready:
		return addrs, stop
	case err := <-done:
		done <- nil // for stop, which waits for Run's return
		t.Fatalf("node.Run returned before it was ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("node did not become ready within 10 s")
	}
	return node.Addrs{}, nil
}

// upstreamsAt points every service of the gateway at addr.
func upstreamsAt(addr string) map[string]grpcclient.Config {
	up := map[string]grpcclient.Config{}
	for _, s := range gateway.Services() {
		up[s] = grpcclient.Config{Addr: addr}
	}
	return up
}

// startGateway builds the gateway with cfg and serves it on httptest; it returns the
// base URL.
func startGateway(t *testing.T, cfg gateway.Config) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	g, err := gateway.New(ctx, cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("gateway.New: %v", err)
	}
	t.Cleanup(g.Close)
	hs := httptest.NewServer(g.Handler())
	t.Cleanup(hs.Close)
	return hs.URL
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// recorder is a real gRPC server standing in for the services behind the gateway:
// every method of the five services is left unimplemented, and interceptors record
// each call's method and incoming metadata, so a test can see exactly what the
// gateway forwarded, or prove that nothing reached the service.
type recorder struct {
	mu    sync.Mutex
	calls []recordedCall
}

type recordedCall struct {
	method string
	md     metadata.MD
}

func (r *recorder) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.calls = append(r.calls, recordedCall{method: info.FullMethod, md: md.Copy()})
	r.mu.Unlock()
	return handler(ctx, req)
}

func (r *recorder) interceptStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	r.mu.Lock()
	r.calls = append(r.calls, recordedCall{method: info.FullMethod, md: md.Copy()})
	r.mu.Unlock()
	return handler(srv, ss)
}

// serviceCalls returns the recorded calls to Umbra's services (health checks excluded).
func (r *recorder) serviceCalls() []recordedCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recordedCall
	for _, c := range r.calls {
		if strings.HasPrefix(c.method, "/umbra.") {
			out = append(out, c)
		}
	}
	return out
}

// startRecorder serves a recorder on loopback with the health service reporting
// status for every service.
func startRecorder(t *testing.T, status healthpb.HealthCheckResponse_ServingStatus) (string, *recorder) {
	t.Helper()
	rec := &recorder{}
	srv := grpc.NewServer(grpc.UnaryInterceptor(rec.intercept), grpc.StreamInterceptor(rec.interceptStream))
	identityv1.RegisterIdentityServiceServer(srv, identityv1.UnimplementedIdentityServiceServer{})
	cardv1.RegisterCardServiceServer(srv, cardv1.UnimplementedCardServiceServer{})
	backupv1.RegisterBackupServiceServer(srv, backupv1.UnimplementedBackupServiceServer{})
	groupv1.RegisterGroupServiceServer(srv, groupv1.UnimplementedGroupServiceServer{})
	messagingv1.RegisterMessagingServiceServer(srv, messagingv1.UnimplementedMessagingServiceServer{})
	hs := health.NewServer()
	for _, svc := range publishedServices {
		hs.SetServingStatus(svc.desc.ServiceName, status)
	}
	healthpb.RegisterHealthServer(srv, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), rec
}

// reply is an HTTP response read whole.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// object decodes the body as a JSON object.
func (r reply) object(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object (%v): %s", err, r.body)
	}
	return m
}

// str returns a top-level string field of the JSON body.
func (r reply) str(t *testing.T, field string) string {
	t.Helper()
	s, ok := r.object(t)[field].(string)
	if !ok {
		t.Fatalf("body has no string %q: %s", field, r.body)
	}
	return s
}

// send performs one request. A non-empty bearer is sent as the Authorization header;
// extra headers follow it.
func send(t *testing.T, method, url, bearer, body string, header ...string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// wantError fails unless r is an error of the gateway's JSON shape with the HTTP
// status, the gRPC code and a message containing msg.
func wantError(t *testing.T, r reply, status int, code float64, msg string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d; want %d (body %s)", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q; want application/json", ct)
	}
	m := r.object(t)
	if m["code"] != code {
		t.Errorf("code %v; want %v (body %s)", m["code"], code, r.body)
	}
	if got, _ := m["message"].(string); !strings.Contains(got, msg) {
		t.Errorf("message %q; want it to contain %q", got, msg)
	}
	if _, ok := m["details"]; !ok {
		t.Errorf("error body has no details field: %s", r.body)
	}
}

// devApp creates an app through REST as the admin and returns its API key.
func devApp(t *testing.T, base string) string {
	t.Helper()
	r := send(t, "POST", base+"/v1/apps", testAdmin, `{"displayName":"gateway test"}`)
	if r.status != http.StatusOK {
		t.Fatalf("create app: %d %s", r.status, r.body)
	}
	return r.str(t, "apiKey")
}

// resolve returns the identity of uid in the app of apiKey, through REST.
func resolve(t *testing.T, base, apiKey, uid string) string {
	t.Helper()
	r := send(t, "POST", base+"/v1/identities:resolve", apiKey, fmt.Sprintf(`{"uids":[%q]}`, uid))
	if r.status != http.StatusOK {
		t.Fatalf("resolve %s: %d %s", uid, r.status, r.body)
	}
	users, _ := r.object(t)["users"].(map[string]any)
	id, _ := users[uid].(string)
	if id == "" {
		t.Fatalf("resolve %s: no identity in %s", uid, r.body)
	}
	return id
}

// issue returns an access token for identity, through REST.
func issue(t *testing.T, base, apiKey, identity string) string {
	t.Helper()
	r := send(t, "POST", base+"/v1/tokens", apiKey, fmt.Sprintf(`{"identity":%q}`, identity))
	if r.status != http.StatusOK {
		t.Fatalf("issue token: %d %s", r.status, r.body)
	}
	return r.str(t, "accessToken")
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	nodeAddr, _ := startNode(t, testAdmin)
	notServing, _ := startRecorder(t, healthpb.HealthCheckResponse_NOT_SERVING)

	cases := []struct {
		name      string
		upstream  string
		wantReady int
		wantState string
	}{
		{"a running node", nodeAddr, http.StatusOK, "SERVING"},
		{"an upstream on a closed port", closedAddr(t), http.StatusServiceUnavailable, "Unavailable"},
		{"an upstream reporting NOT_SERVING", notServing, http.StatusServiceUnavailable, "NOT_SERVING"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(tc.upstream)})
			// Liveness never depends on the upstreams.
			h := send(t, "GET", base+"/healthz", "", "")
			if h.status != http.StatusOK || h.str(t, "status") != "ok" {
				t.Fatalf("/healthz: %d %s; want 200 {\"status\":\"ok\"}", h.status, h.body)
			}
			r := send(t, "GET", base+"/readyz", "", "")
			if r.status != tc.wantReady {
				t.Fatalf("/readyz: %d %s; want %d", r.status, r.body, tc.wantReady)
			}
			m := r.object(t)
			if m["ready"] != (tc.wantReady == http.StatusOK) {
				t.Errorf("ready = %v with status %d", m["ready"], r.status)
			}
			states, _ := m["services"].(map[string]any)
			if states[gateway.Identity] != tc.wantState {
				t.Errorf("services[%s] = %v; want %s", gateway.Identity, states[gateway.Identity], tc.wantState)
			}
			if len(states) != len(gateway.Services()) {
				t.Errorf("/readyz reports %d services; want one per upstream (%v)", len(states), gateway.Services())
			}
		})
	}

	t.Run("turns 503 once the services stop", func(t *testing.T) {
		addr, stop := startNode(t, testAdmin)
		base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(addr)})
		if r := send(t, "GET", base+"/readyz", "", ""); r.status != http.StatusOK {
			t.Fatalf("/readyz before stop: %d %s", r.status, r.body)
		}
		stop()
		r := send(t, "GET", base+"/readyz", "", "")
		if r.status != http.StatusServiceUnavailable || r.object(t)["ready"] != false {
			t.Fatalf("/readyz after stop: %d %s; want 503 with ready false", r.status, r.body)
		}
		if r := send(t, "GET", base+"/healthz", "", ""); r.status != http.StatusOK {
			t.Errorf("/healthz after stop: %d; want 200", r.status)
		}
	})
}

// openAPIDoc fetches and decodes /openapi.json.
func openAPIDoc(t *testing.T, base string) map[string]map[string]struct {
	OperationID string `json:"operationId"`
} {
	t.Helper()
	r := send(t, "GET", base+"/openapi.json", "", "")
	if r.status != http.StatusOK {
		t.Fatalf("/openapi.json: %d", r.status)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("/openapi.json Content-Type %q; want application/json", ct)
	}
	var doc struct {
		Swagger string `json:"swagger"`
		Paths   map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatalf("/openapi.json is not valid JSON: %v", err)
	}
	if doc.Swagger != "2.0" || len(doc.Paths) == 0 {
		t.Fatalf("/openapi.json: swagger %q with %d paths; want an OpenAPI 2.0 document with paths", doc.Swagger, len(doc.Paths))
	}
	return doc.Paths
}

func TestOpenAPIListsTheIdentityRoutes(t *testing.T) {
	t.Parallel()
	base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(closedAddr(t))})
	paths := openAPIDoc(t, base)
	for _, want := range []struct{ method, path, op string }{
		{"post", "/v1/apps", "IdentityService_CreateApp"},
		{"get", "/v1/apps/{appId}", "IdentityService_GetApp"},
		{"post", "/v1/identities:resolve", "IdentityService_ResolveIdentities"},
		{"post", "/v1/tokens", "IdentityService_IssueToken"},
		{"post", "/v1/tokens:revoke", "IdentityService_RevokeTokens"},
		{"get", "/v1/signing-keys", "IdentityService_GetSigningKeys"},
		{"get", "/v1/whoami", "IdentityService_WhoAmI"},
	} {
		if got := paths[want.path][want.method].OperationID; got != want.op {
			t.Errorf("%s %s has operation %q; want %q", strings.ToUpper(want.method), want.path, got, want.op)
		}
	}
}

// publishedServices pairs each service behind the gateway with its access table. Append
// a service here when the gateway starts fronting it.
var publishedServices = []struct {
	desc     *grpc.ServiceDesc
	policies auth.Table
}{
	{&identityv1.IdentityService_ServiceDesc, identity.Policies()},
	{&cardv1.CardService_ServiceDesc, card.Policies()},
	{&backupv1.BackupService_ServiceDesc, backup.Policies()},
	{&groupv1.GroupService_ServiceDesc, group.Policies()},
	{&messagingv1.MessagingService_ServiceDesc, messaging.Policies()},
}

// TestOpenAPIMatchesThePolicies proves that every RPC that is not internal has a REST
// route, that internal RPCs have none, and that each documented route reaches the RPC
// it names.
func TestOpenAPIMatchesThePolicies(t *testing.T) {
	t.Parallel()
	upstream, rec := startRecorder(t, healthpb.HealthCheckResponse_SERVING)
	base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(upstream)})
	paths := openAPIDoc(t, base)

	type route struct{ method, path string }
	routes := map[string]route{} // operationId -> route
	for p, ops := range paths {
		for m, op := range ops {
			if prev, dup := routes[op.OperationID]; dup {
				t.Errorf("operation %s is documented twice: %v and %s %s", op.OperationID, prev, m, p)
			}
			routes[op.OperationID] = route{strings.ToUpper(m), p}
		}
	}
	documented := map[string]bool{}
	for _, svc := range publishedServices {
		short := svc.desc.ServiceName[strings.LastIndex(svc.desc.ServiceName, ".")+1:]
		var methods []string
		for _, m := range svc.desc.Methods {
			methods = append(methods, m.MethodName)
		}
		grpcOnly := map[string]bool{}
		for _, s := range svc.desc.Streams {
			methods = append(methods, s.StreamName)
			// A stream of requests has no REST form: gRPC clients reach it through the
			// gateway's gRPC proxy, REST clients use the unary RPC instead.
			grpcOnly[s.StreamName] = s.ClientStreams
		}
		for _, m := range methods {
			full := "/" + svc.desc.ServiceName + "/" + m
			opID := short + "_" + m
			documented[opID] = true
			t.Run(full, func(t *testing.T) {
				policy, ok := svc.policies[full]
				if !ok {
					t.Fatalf("%s has no access policy", full)
				}
				r, has := routes[opID]
				if policy == auth.Internal || grpcOnly[m] {
					if has {
						t.Fatalf("%s is internal or gRPC only, but /openapi.json documents it as %s %s", full, r.method, r.path)
					}
					return
				}
				if !has {
					t.Fatalf("%s has policy %s but no operation %s in /openapi.json", full, policy, opID)
				}
				// Call the documented route: it must reach exactly this RPC.
				path := r.path
				for strings.Contains(path, "{") {
					i, j := strings.Index(path, "{"), strings.Index(path, "}")
					path = path[:i] + "AAAA" + path[j+1:] // valid for string and bytes (base64) fields
				}
				body := ""
				if r.method != "GET" && r.method != "DELETE" {
					body = "{}"
				}
				before := len(rec.serviceCalls())
				resp := send(t, r.method, base+path, "", body)
				calls := rec.serviceCalls()
				if len(calls) != before+1 {
					t.Fatalf("%s %s (%d %s) reached the service %d times; want once", r.method, path, resp.status, resp.body, len(calls)-before)
				}
				if got := calls[len(calls)-1].method; got != full {
					t.Fatalf("%s %s reached %s; want %s", r.method, path, got, full)
				}
			})
		}
	}
	for opID, r := range routes {
		svcPrefix := false
		for _, svc := range publishedServices {
			short := svc.desc.ServiceName[strings.LastIndex(svc.desc.ServiceName, ".")+1:]
			svcPrefix = svcPrefix || strings.HasPrefix(opID, short+"_")
		}
		if svcPrefix && !documented[opID] {
			t.Errorf("/openapi.json documents %s (%s %s), which is no RPC of its service", opID, r.method, r.path)
		}
	}
}

// jwtHeader decodes the header of a compact JWT.
func jwtHeader(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts; want 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatalf("token header: %v", err)
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("token header: %v", err)
	}
	return h
}

type jwkKey struct {
	Kty, Crv, X, Kid, Alg, Use string
}

func fetchJWKS(t *testing.T, base string) map[string]jwkKey {
	t.Helper()
	r := send(t, "GET", base+"/.well-known/jwks.json", "", "")
	if r.status != http.StatusOK {
		t.Fatalf("jwks: %d %s", r.status, r.body)
	}
	var set struct{ Keys []jwkKey }
	if err := json.Unmarshal(r.body, &set); err != nil {
		t.Fatalf("jwks: %v: %s", err, r.body)
	}
	out := map[string]jwkKey{}
	for _, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" || k.Alg != "EdDSA" || k.Use != "sig" {
			t.Errorf("jwk %+v; want kty OKP, crv Ed25519, alg EdDSA, use sig", k)
		}
		out[k.Kid] = k
	}
	return out
}

// verifyWithJWK checks the token's signature with the published key of its kid.
func verifyWithJWK(t *testing.T, keys map[string]jwkKey, token string) {
	t.Helper()
	kid, _ := jwtHeader(t, token)["kid"].(string)
	k, ok := keys[kid]
	if !ok {
		t.Fatalf("the JWK set has no key %q (it has %d keys)", kid, len(keys))
	}
	pub, err := base64.RawURLEncoding.DecodeString(k.X)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		t.Fatalf("jwk %s: x is not a raw base64url Ed25519 key (%d bytes, %v)", kid, len(pub), err)
	}
	i := strings.LastIndex(token, ".")
	sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	if !ed25519.Verify(ed25519.PublicKey(pub), []byte(token[:i]), sig) {
		t.Fatalf("the token's signature does not verify with the published key %s", kid)
	}
}

func TestJWKSPublishesTheSigningKeys(t *testing.T) {
	t.Parallel()
	addr, _ := startNode(t, testAdmin)
	base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(addr)})
	apiKey := devApp(t, base)
	alice := resolve(t, base, apiKey, "alice")
	first := issue(t, base, apiKey, alice)
	if h := jwtHeader(t, first); h["alg"] != "EdDSA" {
		t.Errorf("token alg %v; want EdDSA", h["alg"])
	}
	keys := fetchJWKS(t, base)
	if len(keys) != 1 {
		t.Fatalf("JWK set has %d keys before any rotation; want 1", len(keys))
	}
	verifyWithJWK(t, keys, first)

	// After a rotation both keys are published, and each token verifies with its own.
	if r := send(t, "POST", base+"/v1/signing-keys:rotate", testAdmin, "{}"); r.status != http.StatusOK {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	}
	second := issue(t, base, apiKey, alice)
	if jwtHeader(t, first)["kid"] == jwtHeader(t, second)["kid"] {
		t.Fatal("a token issued after rotation has the old kid")
	}
	keys = fetchJWKS(t, base)
	if len(keys) != 2 {
		t.Fatalf("JWK set has %d keys after one rotation; want 2", len(keys))
	}
	verifyWithJWK(t, keys, first)
	verifyWithJWK(t, keys, second)
	for _, tok := range []string{first, second} {
		if r := send(t, "GET", base+"/v1/whoami", tok, ""); r.status != http.StatusOK || r.str(t, "identity") != alice {
			t.Errorf("whoami: %d %s; want 200 for %s", r.status, r.body, alice)
		}
	}
}

func TestRoutingErrors(t *testing.T) {
	t.Parallel()
	addr, _ := startNode(t, testAdmin)
	base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(addr)})
	cases := []struct {
		name   string
		method string
		path   string
		header []string
		status int
		code   float64
		msg    string
	}{
		{"unknown route", "GET", "/v1/nothing-here", nil, http.StatusNotFound, 5, "no route for GET /v1/nothing-here"},
		{"unknown route outside /v1", "POST", "/admin", nil, http.StatusNotFound, 5, "no route"},
		{"unknown custom verb", "POST", "/v1/tokens:explode", nil, http.StatusNotFound, 5, "no route"},
		{"DELETE on a GET route", "DELETE", "/v1/whoami", nil, http.StatusMethodNotAllowed, 12, "method DELETE is not allowed"},
		{"GET on a POST route", "GET", "/v1/tokens", nil, http.StatusMethodNotAllowed, 12, "method GET is not allowed"},
		{"PUT on a POST route", "PUT", "/v1/apps", nil, http.StatusMethodNotAllowed, 12, "method PUT is not allowed"},
		// Method override is disabled: a header must not turn POST into GET.
		{"method override header", "POST", "/v1/whoami", []string{"X-HTTP-Method-Override", "GET"}, http.StatusMethodNotAllowed, 12, "method POST is not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, send(t, tc.method, base+tc.path, "", "", tc.header...), tc.status, tc.code, tc.msg)
		})
	}
}

// chunked hides a reader's length, so that the client sends the body chunked.
type chunked struct{ io.Reader }

func TestRequestBodies(t *testing.T) {
	t.Parallel()
	const limit = 1024
	upstream, rec := startRecorder(t, healthpb.HealthCheckResponse_SERVING)
	base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(upstream), MaxBodyBytes: limit})

	// exactly returns a valid request padded with spaces to n bytes.
	exactly := func(n int) string {
		s := `{"uids":["alice"]}`
		return s + strings.Repeat(" ", n-len(s))
	}
	cases := []struct {
		name    string
		body    string
		chunked bool
		// status is the gateway's own answer; 0 means the request must reach the service
		// (which, being unimplemented here, answers 501).
		status int
		code   float64
		msg    string
	}{
		{"at the limit", exactly(limit), false, 0, 0, ""},
		{"at the limit, chunked", exactly(limit), true, 0, 0, ""},
		{"one byte over", exactly(limit + 1), false, http.StatusRequestEntityTooLarge, 3, "over the limit of 1024 bytes"},
		{"one byte over, chunked", exactly(limit + 1), true, http.StatusRequestEntityTooLarge, 3, "over the limit of 1024 bytes"},
		{"far over, chunked", exactly(64 << 10), true, http.StatusRequestEntityTooLarge, 3, "over the limit"},
		{"malformed JSON", `{"uids":[`, false, http.StatusBadRequest, 3, ""},
		{"not JSON at all", `uids=alice`, false, http.StatusBadRequest, 3, ""},
		{"unknown field", `{"uids":["alice"],"isAdmin":true}`, false, http.StatusBadRequest, 3, `unknown field "isAdmin"`},
		{"wrong type", `{"uids":"alice"}`, false, http.StatusBadRequest, 3, "unexpected token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = chunked{body}
			}
			req, err := http.NewRequest("POST", base+"/v1/identities:resolve", body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.chunked && req.ContentLength != 0 {
				t.Fatalf("request has Content-Length %d; want it chunked", req.ContentLength)
			}
			req.Header.Set("Authorization", "Bearer some-api-key")
			before := len(rec.serviceCalls())
			r := do(t, req)
			reached := len(rec.serviceCalls()) - before
			if tc.status == 0 {
				if reached != 1 || r.status != http.StatusNotImplemented {
					t.Fatalf("got %d %s with %d calls to the service; want the call to reach it (501 from the unimplemented upstream)", r.status, r.body, reached)
				}
				return
			}
			wantError(t, r, tc.status, tc.code, tc.msg)
			if reached != 0 {
				t.Fatalf("the service saw %d calls; a refused body must never reach it", reached)
			}
		})
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	const app = "https://app.example"
	upstream := closedAddr(t)
	withCORS := startGateway(t, gateway.Config{Upstreams: upstreamsAt(upstream), CORSOrigins: []string{app}})
	anyOrigin := startGateway(t, gateway.Config{Upstreams: upstreamsAt(upstream), CORSOrigins: []string{"*"}})
	noCORS := startGateway(t, gateway.Config{Upstreams: upstreamsAt(upstream)})

	preflight := []string{"Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization, content-type"}
	cases := []struct {
		name     string
		base     string
		method   string
		path     string
		origin   string
		header   []string
		status   int // 0: any
		wantACAO string
	}{
		{"preflight from the allowed origin", withCORS, "OPTIONS", "/v1/tokens", app, preflight, http.StatusNoContent, app},
		{"preflight from another origin", withCORS, "OPTIONS", "/v1/tokens", "https://evil.example", preflight, 0, ""},
		{"preflight without CORS configured", noCORS, "OPTIONS", "/v1/tokens", app, preflight, 0, ""},
		{"preflight with any origin allowed", anyOrigin, "OPTIONS", "/v1/tokens", "https://other.example", preflight, http.StatusNoContent, "https://other.example"},
		{"request from the allowed origin", withCORS, "GET", "/healthz", app, nil, http.StatusOK, app},
		{"request from another origin", withCORS, "GET", "/healthz", "https://evil.example", nil, http.StatusOK, ""},
		{"request without an origin", withCORS, "GET", "/healthz", "", nil, http.StatusOK, ""},
		{"request without CORS configured", noCORS, "GET", "/healthz", app, nil, http.StatusOK, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			header := tc.header
			if tc.origin != "" {
				header = append([]string{"Origin", tc.origin}, header...)
			}
			r := send(t, tc.method, tc.base+tc.path, "", "", header...)
			if tc.status != 0 && r.status != tc.status {
				t.Fatalf("status %d; want %d (body %s)", r.status, tc.status, r.body)
			}
			acao, has := r.header["Access-Control-Allow-Origin"]
			switch {
			case tc.wantACAO == "" && has:
				t.Fatalf("Access-Control-Allow-Origin %q; want none", acao)
			case tc.wantACAO != "" && r.header.Get("Access-Control-Allow-Origin") != tc.wantACAO && r.header.Get("Access-Control-Allow-Origin") != "*":
				t.Fatalf("Access-Control-Allow-Origin %q; want %q", acao, tc.wantACAO)
			}
			if tc.wantACAO == "" {
				for k := range r.header {
					if strings.HasPrefix(k, "Access-Control-") {
						t.Errorf("header %s set for a request that CORS does not allow", k)
					}
				}
			}
			if tc.status == http.StatusNoContent {
				if m := r.header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "POST") {
					t.Errorf("Access-Control-Allow-Methods %q; want POST among them", m)
				}
				if h := strings.ToLower(r.header.Get("Access-Control-Allow-Headers")); !strings.Contains(h, "authorization") || !strings.Contains(h, "content-type") {
					t.Errorf("Access-Control-Allow-Headers %q; want Authorization and Content-Type", h)
				}
			}
			if tc.wantACAO != "" && !slices.Contains(r.header.Values("Vary"), "Origin") {
				t.Errorf("Vary %q; a response that depends on Origin must say so", r.header.Values("Vary"))
			}
		})
	}
}

// TestClientMetadataIsNotForwarded proves that the gateway passes the Authorization
// header and nothing else a client sends: a service token or any other metadata
// cannot be smuggled to a service.
func TestClientMetadataIsNotForwarded(t *testing.T) {
	t.Parallel()
	upstream, rec := startRecorder(t, healthpb.HealthCheckResponse_SERVING)
	base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(upstream)})
	smuggled := []string{
		"Grpc-Metadata-X-Umbra-Service-Token", "stolen-service-token",
		"X-Umbra-Service-Token", "stolen-service-token",
		"Grpc-Metadata-Authorization", "Bearer second-credential",
		"Grpc-Metadata-X-Umbra-Identity", "u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"Cookie", "session=1",
		"X-Custom", "1",
		"Accept-Language", "fr",
		"User-Agent", "smuggler/1.0",
		"X-Umbra-Client-Addr", "203.0.113.5",
		"Grpc-Metadata-X-Umbra-Client-Addr", "203.0.113.5",
		"Grpc-Metadata-X-Umbra-Forwarder-Token", "guessed-forwarder-token",
	}
	// The keys grpc itself puts on every call, and those grpc-gateway adds. grpc-gateway's
	// "grpcgateway-*" keys are copies of client headers (Cookie, User-Agent...), so they
	// must not arrive either.
	transport := []string{":authority", "content-type", "user-agent", "grpc-accept-encoding"}
	gatewayKeys := []string{"authorization", "x-forwarded-for", "x-forwarded-host", auth.ClientAddrHeader}

	cases := []struct {
		name, method, path, body string
	}{
		{"GET route", "GET", "/v1/whoami", ""},
		{"POST route", "POST", "/v1/identities:resolve", `{"uids":["alice"]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(rec.serviceCalls())
			send(t, tc.method, base+tc.path, "the-credential", tc.body, smuggled...)
			calls := rec.serviceCalls()
			if len(calls) != before+1 {
				t.Fatalf("the service saw %d calls; want 1", len(calls)-before)
			}
			md := calls[len(calls)-1].md
			var keys []string
			for k := range md {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if !slices.Contains(transport, k) && !slices.Contains(gatewayKeys, k) {
					t.Errorf("metadata %q = %q reached the service; only authorization and the forwarding keys may (got keys %v)", k, md[k], keys)
				}
			}
			if v := md.Get(auth.ServiceTokenHeader); len(v) != 0 {
				t.Errorf("a client-supplied service token reached the service: %q", v)
			}
			// The client's address is the gateway's word (the TCP peer), never the client's.
			if v := md.Get(auth.ClientAddrHeader); len(v) != 1 || v[0] != "127.0.0.1" {
				t.Errorf("client address %q; want the TCP peer's alone, 127.0.0.1", v)
			}
			if v := md.Get(auth.ForwarderTokenHeader); len(v) != 0 {
				t.Errorf("a client-supplied forwarder token reached the service: %q", v)
			}
			if v := md.Get("authorization"); len(v) != 1 || v[0] != "Bearer the-credential" {
				t.Errorf("authorization metadata %q; want exactly the client's one header", v)
			}
			if ua := md.Get("user-agent"); len(ua) > 0 && strings.Contains(strings.Join(ua, " "), "smuggler") {
				t.Errorf("the client's User-Agent reached the service: %q", ua)
			}
		})
	}
}

func TestErrorCodesMapToHTTPStatus(t *testing.T) {
	t.Parallel()
	addr, _ := startNode(t, testAdmin)
	base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(addr)})
	noAdminAddr, _ := startNode(t, "")
	noAdmin := startGateway(t, gateway.Config{Upstreams: upstreamsAt(noAdminAddr)})

	apiKey := devApp(t, base)
	alice := resolve(t, base, apiKey, "alice")
	token := issue(t, base, apiKey, alice)
	unknownApp := "app_" + strings.Repeat("a", 26)

	cases := []struct {
		name   string
		base   string
		method string
		path   string
		bearer string
		body   string
		status int
		code   float64
		msg    string
	}{
		{"no credential", base, "POST", "/v1/tokens", "", fmt.Sprintf(`{"identity":%q}`, alice), http.StatusUnauthorized, 16, "missing credential"},
		{"malformed API key", base, "POST", "/v1/tokens", "not-a-key", fmt.Sprintf(`{"identity":%q}`, alice), http.StatusUnauthorized, 16, "malformed app API key"},
		{"wrong admin credential", base, "POST", "/v1/apps", "not-the-admin", `{"displayName":"x"}`, http.StatusUnauthorized, 16, "invalid admin credential"},
		{"API key where a token is needed", base, "GET", "/v1/whoami", apiKey, "", http.StatusUnauthorized, 16, ""},
		{"access token where an API key is needed", base, "POST", "/v1/identities:resolve", token, `{"uids":["bob"]}`, http.StatusUnauthorized, 16, ""},
		{"no ids to resolve", base, "POST", "/v1/identities:resolve", apiKey, `{"uids":[]}`, http.StatusBadRequest, 3, "no ids given"},
		{"malformed identity", base, "POST", "/v1/tokens", apiKey, `{"identity":"alice"}`, http.StatusBadRequest, 3, "identity"},
		{"malformed app id", base, "GET", "/v1/apps/nope", testAdmin, "", http.StatusBadRequest, 3, "app_id"},
		{"unknown app", base, "GET", "/v1/apps/" + unknownApp, testAdmin, "", http.StatusNotFound, 5, "not found"},
		{"admin methods disabled", noAdmin, "POST", "/v1/apps", "anything", `{"displayName":"x"}`, http.StatusForbidden, 7, "admin methods are disabled"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, send(t, tc.method, tc.base+tc.path, tc.bearer, tc.body), tc.status, tc.code, tc.msg)
		})
	}

	t.Run("success", func(t *testing.T) {
		r := send(t, "GET", base+"/v1/whoami", token, "")
		if r.status != http.StatusOK || r.str(t, "identity") != alice {
			t.Fatalf("whoami: %d %s; want 200 for %s", r.status, r.body, alice)
		}
		if !bytes.Contains(r.body, []byte(`"appId"`)) {
			t.Errorf("whoami body %s; want camelCase JSON names", r.body)
		}
	})
}

// TestUnreachableServiceIsA503WithoutInternals: when a service cannot be reached, a
// REST caller gets 503 in the usual error shape, and learns nothing about the
// deployment behind the gateway (addresses, dial errors).
func TestUnreachableServiceIsA503WithoutInternals(t *testing.T) {
	t.Parallel()
	upstream := closedAddr(t)
	_, port, _ := net.SplitHostPort(upstream)
	base := startGateway(t, gateway.Config{Upstreams: upstreamsAt(upstream)})
	for _, path := range []string{"/v1/signing-keys", "/.well-known/jwks.json"} {
		t.Run(path, func(t *testing.T) {
			r := send(t, "GET", base+path, "", "")
			if r.status != http.StatusServiceUnavailable {
				t.Fatalf("status %d (%s); want 503", r.status, r.body)
			}
			m := r.object(t)
			if m["code"] != float64(14) {
				t.Errorf("code %v; want 14 (Unavailable)", m["code"])
			}
			if _, ok := m["details"]; !ok {
				t.Errorf("error body %s has no details field: every other gateway error has {code, message, details} (gateway.go jwks writes its own shape instead of using writeError)", bytes.TrimSpace(r.body))
			}
			msg, _ := m["message"].(string)
			for _, internal := range []string{port, "dial tcp", "connection refused", "transport:"} {
				if strings.Contains(msg, internal) {
					t.Errorf("the message %q shows a public caller the gateway's connection error (%q): internal details must not leak; the gateway should answer with a generic message and log the cause", msg, internal)
					break
				}
			}
		})
	}
}
