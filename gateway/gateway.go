package gateway

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

//go:embed openapi/umbra.swagger.json
var openAPI []byte

// DefaultMaxBodyBytes bounds a request body unless configured otherwise: room for the
// largest message envelope (256 KiB) in base64 with its JSON around it.
const DefaultMaxBodyBytes = 1 << 20

// Config configures the gateway.
type Config struct {
	// Addr is the HTTP listen address, "127.0.0.1:8080" by default.
	Addr string
	TLS  tlsconf.Server
	// Insecure allows plaintext HTTP on an address that is not loopback.
	Insecure bool
	// Upstreams says how to reach each service by name (Identity, Card...). Every
	// service must have one.
	Upstreams map[string]grpcclient.Config
	// MaxBodyBytes bounds request bodies; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// CORSOrigins are the browser origins allowed to call the API ("*" for any); none
	// means no CORS headers at all.
	CORSOrigins []string
	// Metrics, when set with MetricsAddr, is served at /metrics on MetricsAddr, a
	// plain-HTTP listener of its own (ServeMetrics); never on Addr. Only Run uses them.
	Metrics     http.Handler
	MetricsAddr string
	// GRPCAddr, when set, is where the gateway also accepts gRPC and forwards each call
	// to the service that owns its method (see ServeGRPC). Only Run uses it.
	GRPCAddr string
	// Policies are the services' access tables: the gRPC proxy forwards a method only
	// when it has a policy and that policy is not internal.
	Policies auth.Table
	// Pprof serves Go's profiler at /debug/pprof/. Only `umbra dev --pprof` sets it:
	// never on a listener others can reach.
	Pprof bool
	// ForwarderToken, when set, goes with every call to the services, with which they
	// believe the client's address the gateway sends (auth.ClientAddrHeader), so that
	// they count failed credentials per client rather than per gateway. The services
	// must be given the same token, or trust the gateway's certificate
	// (--forwarder-peers).
	ForwarderToken string
	// Web, when set, is served at / and at the paths of its files (GET and HEAD only;
	// never under /v1/): the web chat that `umbra dev` serves. `umbra serve` never sets
	// it.
	Web fs.FS
	// Dev, when set, is served under /dev/: the development sign-in of `umbra dev`,
	// which checks its callers itself. `umbra serve` never sets it.
	Dev http.Handler
}

// Gateway is the HTTP handler with its upstream connections.
type Gateway struct {
	cfg      Config
	log      *zap.Logger
	conns    map[string]*grpc.ClientConn
	identity identityv1.IdentityServiceClient
	handler  http.Handler
	routes   map[string]proxyRoute // full gRPC method name -> where the proxy sends it
}

// New dials the upstreams (without waiting for them) and builds the handler.
func New(ctx context.Context, cfg Config, log *zap.Logger) (*Gateway, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	g := &Gateway{cfg: cfg, log: log, conns: map[string]*grpc.ClientConn{}, routes: map[string]proxyRoute{}}
	mux := runtime.NewServeMux(
		// Authorization is always forwarded by grpc-gateway; nothing else is.
		runtime.WithIncomingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithOutgoingTrailerMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}}),
		runtime.WithRoutingErrorHandler(routingError),
		runtime.WithMetadata(func(_ context.Context, r *http.Request) metadata.MD {
			return forwarded(cfg.ForwarderToken, r.RemoteAddr)
		}),
		runtime.WithDisableHTTPMethodOverride(),
	)
	for _, u := range upstreams {
		uc, ok := cfg.Upstreams[u.name]
		if !ok {
			g.Close()
			return nil, fmt.Errorf("gateway: no address for the %s service", u.name)
		}
		conn, ok := g.connFor(uc)
		if !ok {
			var err error
			if conn, err = grpcclient.Dial(uc, hideConnectionErrors(log)...); err != nil {
				g.Close()
				return nil, fmt.Errorf("gateway: %s: %w", u.name, err)
			}
		}
		g.conns[u.name] = conn
		for method, policy := range cfg.Policies {
			if strings.HasPrefix(method, "/"+u.grpcName+"/") {
				g.routes[method] = proxyRoute{upstream: u.name, policy: policy}
			}
		}
		if err := u.register(ctx, mux, conn); err != nil {
			g.Close()
			return nil, fmt.Errorf("gateway: register %s: %w", u.name, err)
		}
	}
	g.identity = identityv1.NewIdentityServiceClient(g.conns[Identity])

	root := http.NewServeMux()
	root.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	root.HandleFunc("GET /readyz", g.ready)
	root.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openAPI)
	})
	root.HandleFunc("GET /.well-known/jwks.json", g.jwks)
	if cfg.Pprof {
		root.HandleFunc("/debug/pprof/", pprof.Index)
		root.HandleFunc("/debug/pprof/profile", pprof.Profile)
		root.HandleFunc("/debug/pprof/trace", pprof.Trace)
		root.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	}
	if cfg.Dev != nil {
		root.Handle("/dev/", limitBody(cfg.MaxBodyBytes, cfg.Dev))
	}
	var api http.Handler = limitBody(cfg.MaxBodyBytes, mux)
	if cfg.Web != nil {
		web, err := webFiles(cfg.Web, api)
		if err != nil {
			g.Close()
			return nil, err
		}
		api = web
	}
	root.Handle("/", api)
	g.handler = cors(cfg.CORSOrigins, root)
	return g, nil
}

// forwarded is the metadata with which the gateway tells a service its client's
// address (remote, host:port as net/http reports it): the TCP peer, never what the
// client says. A service believes it from a gateway that has the forwarder token, or
// whose certificate it names in --forwarder-peers.
func forwarded(token, remote string) metadata.MD {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	md := metadata.Pairs(auth.ClientAddrHeader, host)
	if token != "" {
		md.Set(auth.ForwarderTokenHeader, token)
	}
	return md
}

// connFor reuses a connection already dialled to the same address (in `umbra dev`
// every service is behind one listener).
func (g *Gateway) connFor(uc grpcclient.Config) (*grpc.ClientConn, bool) {
	for name, conn := range g.conns {
		if g.cfg.Upstreams[name] == uc {
			return conn, true
		}
	}
	return nil, false
}

// Handler returns the gateway's HTTP handler.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Close closes the upstream connections.
func (g *Gateway) Close() {
	seen := map[*grpc.ClientConn]bool{}
	for _, c := range g.conns {
		if !seen[c] {
			seen[c] = true
			c.Close()
		}
	}
}

// Run serves the gateway on cfg.Addr (and cfg.GRPCAddr, and the metrics on
// cfg.MetricsAddr, when set) until ctx ends, then shuts down gracefully.
func Run(ctx context.Context, cfg Config, log *zap.Logger) error {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if !cfg.TLS.Enabled() {
		if err := tlsconf.CheckPlaintext("HTTP listener", cfg.Addr, cfg.Insecure); err != nil {
			return err
		}
	}
	g, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer g.Close()
	var serve []func(context.Context) error
	var opened []net.Listener
	listen := func(what, addr string, run func(context.Context, net.Listener) error) error {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("gateway: %s: listen on %s: %w", what, addr, err)
		}
		opened = append(opened, lis)
		serve = append(serve, func(ctx context.Context) error { return run(ctx, lis) })
		return nil
	}
	err = listen("HTTP", cfg.Addr, g.Serve)
	if err == nil && cfg.GRPCAddr != "" {
		err = listen("gRPC", cfg.GRPCAddr, g.ServeGRPC)
	}
	if err == nil && cfg.Metrics != nil && cfg.MetricsAddr != "" {
		err = listen("metrics", cfg.MetricsAddr, func(ctx context.Context, lis net.Listener) error {
			return ServeMetrics(ctx, lis, cfg.Metrics)
		})
	}
	if err != nil {
		for _, lis := range opened {
			lis.Close()
		}
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(serve))
	for _, f := range serve {
		go func() { errc <- f(ctx) }()
	}
	// The first to end (ctx, or a listener failing) ends them all.
	first := <-errc
	cancel()
	for range len(serve) - 1 {
		if err := <-errc; first == nil {
			first = err
		}
	}
	return first
}

// Serve serves on lis until ctx ends.
func (g *Gateway) Serve(ctx context.Context, lis net.Listener) error {
	srv := &http.Server{
		Handler:           g.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          zap.NewStdLog(g.log),
	}
	if g.cfg.TLS.Enabled() {
		tc, err := g.cfg.TLS.Config()
		if err != nil {
			return err
		}
		srv.TLSConfig = tc
	}
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(lis, "", "")
		} else {
			errc <- srv.Serve(lis)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close() // streams do not end by themselves
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

// ready answers 200 when every upstream service reports SERVING, 503 otherwise. A
// service that says why it is not serving (grpcserver.NotServingReasonHeader: a store
// whose writes fail) has its reason under "reasons".
func (g *Gateway) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	states := map[string]string{}
	reasons := map[string]string{}
	ok := true
	for _, u := range upstreams {
		var header metadata.MD
		resp, err := healthpb.NewHealthClient(g.conns[u.name]).Check(ctx, &healthpb.HealthCheckRequest{Service: u.grpcName}, grpc.Header(&header))
		switch {
		case err != nil:
			states[u.name] = status.Code(err).String()
			ok = false
		case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
			states[u.name] = resp.GetStatus().String()
			if why := header.Get(grpcserver.NotServingReasonHeader); len(why) > 0 {
				reasons[u.name] = why[0]
			}
			ok = false
		default:
			states[u.name] = "SERVING"
		}
	}
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	body := map[string]any{"ready": ok, "services": states}
	if len(reasons) > 0 {
		body["reasons"] = reasons
	}
	writeJSON(w, code, body)
}

// jwk is one key of a JWK set (RFC 8037: Ed25519 as an OKP key).
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// jwks serves the token-signing keys as a JWK set.
func (g *Gateway) jwks(w http.ResponseWriter, r *http.Request) {
	resp, err := g.identity.GetSigningKeys(r.Context(), &identityv1.GetSigningKeysRequest{})
	if err != nil {
		s := status.Convert(err)
		writeError(w, s.Code(), s.Message())
		return
	}
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, k := range resp.GetKeys() {
		set.Keys = append(set.Keys, jwk{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(k.GetPublicKey()), Kid: k.GetKeyId(), Alg: k.GetAlgorithm(), Use: "sig"})
	}
	w.Header().Set("Cache-Control", "public, max-age=60")
	writeJSON(w, http.StatusOK, set)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// writeError writes an error body of the same shape as grpc-gateway's.
func writeError(w http.ResponseWriter, code codes.Code, msg string) {
	writeJSON(w, runtime.HTTPStatusFromCode(code), map[string]any{"code": code, "message": msg, "details": []any{}})
}

// routingError says what was wrong with a request that matched no route.
func routingError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	switch httpStatus {
	case http.StatusMethodNotAllowed:
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"code": codes.Unimplemented, "message": fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path), "details": []any{}})
	case http.StatusNotFound:
		writeError(w, codes.NotFound, fmt.Sprintf("no route for %s %s; see /openapi.json", r.Method, r.URL.Path))
	default:
		writeError(w, codes.InvalidArgument, http.StatusText(httpStatus))
	}
}

// limitBody refuses request bodies over max with 413 before any of it reaches a
// service. The body is read whole (it is small by definition) so that the limit holds
// for chunked bodies too.
func limitBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		tooLarge := func() {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]any{"code": codes.InvalidArgument, "message": fmt.Sprintf("request body is over the limit of %d bytes", max), "details": []any{}})
		}
		if r.ContentLength > max {
			tooLarge()
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
		if err != nil {
			writeError(w, codes.InvalidArgument, "cannot read request body")
			return
		}
		if int64(len(body)) > max {
			tooLarge()
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// cors answers preflight requests and sets the CORS headers for allowed origins. With
// no origins configured it adds nothing, so browsers keep the same-origin policy.
func cors(origins []string, next http.Handler) http.Handler {
	if len(origins) == 0 {
		return next
	}
	allowed := map[string]bool{}
	for _, o := range origins {
		allowed[o] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The answer depends on the origin, so caches must key on it whatever it is.
		w.Header().Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		if origin == "" || !(allowed["*"] || allowed[origin]) {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
