package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/internal/durable"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// The development sign-in of `umbra dev`: the web chat's way to get an access token for
// a typed name without an app backend. It plays the development app's backend with the
// app's API key, so whoever may call it may act as anyone in that app; it is built only
// by RunDev, and answers only callers on this machine (see devRefusal and
// docs/operations.md, "The development sign-in").
//
//	POST /dev/sign-in {"name": "alice"}    -> {"name", "identity", "accessToken", "expiresAt"}
//	GET  /dev/users                        -> {"users": [{"name", "identity"}]}, the names that signed in here
//	POST /dev/resolve {"names": ["bob"]}   -> {"users": [{"name", "identity"}]}, any names
//	POST /dev/groups {"name": "team"}      -> {"name", "identity"}, a group name's identity, remembered
//	GET  /dev/groups                       -> {"groups": [{"name", "identity"}]}, the group names given here
//
// A name is the app's own user id, exactly as `umbra login NAME` uses it, so the web
// chat's alice is the CLI's alice; a group name is the app's own group id, as
// `umbra group create NAME` uses it. Umbra itself knows neither: an app backend keeps
// its users' and groups' names, and so does this stand-in for one, so that the chat can
// show names for the identities the services return.

const (
	// devUsersFile lists the names that signed in, for the web chat's contact list.
	devUsersFile = "dev-users.json"
	// devGroupsFile lists the group names given to POST /dev/groups, for the web chat's
	// group list.
	devGroupsFile = "dev-groups.json"
	// devMaxName is the longest name, in bytes.
	devMaxName = 64
	// devMaxUsers bounds each list of names (one ResolveIdentities call resolves it).
	devMaxUsers = 1000
	// devMaxBody bounds a request body to the dev routes.
	devMaxBody = 64 << 10
)

// devSignIn serves the dev routes.
type devSignIn struct {
	log *zap.Logger
	// app is set once the node is ready; until then every call is refused with 503.
	app atomic.Pointer[devAppClient]

	users  *devNames // names that signed in, in order of first sign-in
	groups *devNames // group names given to POST /dev/groups, in order
}

// devNames is a list of names kept in a file of the data folder.
type devNames struct {
	path string
	log  *zap.Logger

	mu    sync.Mutex
	names []string
}

// devAppClient calls the identity service as the development app's backend.
type devAppClient struct {
	identity identityv1.IdentityServiceClient
	apiKey   string
}

// devNamesFile is dev-users.json and dev-groups.json.
type devNamesFile struct {
	Names []string `json:"names"`
}

// newDevSignIn returns the dev routes' handler for a data folder, with the names that
// signed in and the group names given before.
func newDevSignIn(dataDir string, log *zap.Logger) *devSignIn {
	return &devSignIn{
		log:    log,
		users:  loadDevNames(filepath.Join(dataDir, devUsersFile), log),
		groups: loadDevNames(filepath.Join(dataDir, devGroupsFile), log),
	}
}

// loadDevNames reads a list of names (a damaged list is started afresh: it holds no
// secret).
func loadDevNames(path string, log *zap.Logger) *devNames {
	l := &devNames{path: path, log: log}
	b, err := os.ReadFile(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("dev sign-in: cannot read a list of names; starting with none", zap.String("file", path), zap.Error(err))
		}
		return l
	}
	var f devNamesFile
	if err := json.Unmarshal(b, &f); err != nil {
		log.Warn("dev sign-in: a list of names is damaged; starting with none", zap.String("file", path), zap.Error(err))
		return l
	}
	for _, n := range f.Names {
		if name, err := devName(n); err == nil && !slices.Contains(l.names, name) && len(l.names) < devMaxUsers {
			l.names = append(l.names, name)
		}
	}
	return l
}

// list returns the names, sorted.
func (l *devNames) list() []string {
	l.mu.Lock()
	names := slices.Clone(l.names)
	l.mu.Unlock()
	slices.Sort(names)
	return names
}

// remember adds name to the list, and saves the list when it changed. A list that
// cannot be saved costs only the chat's lists after a restart.
func (l *devNames) remember(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if slices.Contains(l.names, name) || len(l.names) >= devMaxUsers {
		return
	}
	l.names = append(l.names, name)
	b, err := json.MarshalIndent(devNamesFile{Names: l.names}, "", "  ")
	if err == nil {
		err = durable.WriteFile(l.path, append(b, '\n'))
	}
	if err != nil {
		l.log.Warn("dev sign-in: cannot save a list of names", zap.String("file", l.path), zap.Error(err))
	}
}

// ready makes the handler call the identity service as the app whose API key is apiKey.
func (d *devSignIn) ready(identity identityv1.IdentityServiceClient, apiKey string) {
	d.app.Store(&devAppClient{identity: identity, apiKey: apiKey})
}

func (d *devSignIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if why := devRefusal(r); why != "" {
		d.log.Warn("dev sign-in: refused", zap.String("remote", r.RemoteAddr), zap.String("why", why))
		devError(w, codes.PermissionDenied, why)
		return
	}
	methods, ok := map[string][]string{
		"/dev/sign-in": {http.MethodPost},
		"/dev/users":   {http.MethodGet},
		"/dev/resolve": {http.MethodPost},
		"/dev/groups":  {http.MethodGet, http.MethodPost},
	}[r.URL.Path]
	switch {
	case !ok:
		devError(w, codes.NotFound, fmt.Sprintf("no route for %s %s; the dev routes are POST /dev/sign-in, GET /dev/users, POST /dev/resolve and GET or POST /dev/groups", r.Method, r.URL.Path))
		return
	case !slices.Contains(methods, r.Method):
		w.Header().Set("Allow", strings.Join(methods, ", "))
		devWriteJSON(w, http.StatusMethodNotAllowed, map[string]any{"code": codes.Unimplemented, "message": fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path), "details": []any{}})
		return
	}
	if r.Method == http.MethodPost {
		// A JSON body needs a CORS preflight from another origin's page, which the dev
		// routes never grant: a form or a plain-text post cannot reach them.
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			devError(w, codes.InvalidArgument, "send the body as application/json")
			return
		}
	}
	app := d.app.Load()
	if app == nil {
		devError(w, codes.Unavailable, "umbra dev is starting; try again in a moment")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+app.apiKey)
	switch {
	case r.URL.Path == "/dev/sign-in":
		d.signIn(ctx, w, r, app)
	case r.URL.Path == "/dev/users":
		d.answerNames(ctx, w, app, "users", d.users.list())
	case r.URL.Path == "/dev/resolve":
		d.resolveNames(ctx, w, r, app)
	case r.Method == http.MethodGet: // /dev/groups
		d.answerNames(ctx, w, app, "groups", d.groups.list())
	default:
		d.nameGroup(ctx, w, r, app)
	}
}

// devReadName reads the name of a sign-in or of a group's naming from r, and resolves
// it to the identity of that name among kind ("users" or "groups"). It answers
// INVALID_ARGUMENT, devName's message after what, for a missing or malformed name, and
// the resolution's error; ok is false then.
func devReadName(ctx context.Context, w http.ResponseWriter, r *http.Request, app *devAppClient, kind, what string) (name, identity string, ok bool) {
	var req struct {
		Name string `json:"name"`
	}
	if err := devReadJSON(r, &req); err != nil {
		devError(w, codes.InvalidArgument, err.Error())
		return "", "", false
	}
	name, err := devName(req.Name)
	if err != nil {
		devError(w, codes.InvalidArgument, what+err.Error())
		return "", "", false
	}
	ids, err := app.resolve(ctx, kind, []string{name})
	if err != nil {
		devCallError(w, err)
		return "", "", false
	}
	return name, ids[name], true
}

func (d *devSignIn) signIn(ctx context.Context, w http.ResponseWriter, r *http.Request, app *devAppClient) {
	name, id, ok := devReadName(ctx, w, r, app, "users", "")
	if !ok {
		return
	}
	tok, err := app.identity.IssueToken(ctx, &identityv1.IssueTokenRequest{Identity: id})
	if err != nil {
		devCallError(w, err)
		return
	}
	d.users.remember(name)
	d.log.Info("dev sign-in", zap.String("identity", id))
	devWriteJSON(w, http.StatusOK, map[string]string{
		"name":        name,
		"identity":    id,
		"accessToken": tok.GetAccessToken(),
		"expiresAt":   tok.GetExpiresAt().AsTime().UTC().Format(time.RFC3339),
	})
}

// nameGroup answers POST /dev/groups: the identity of a group name, which it
// remembers for GET /dev/groups. It creates no group: the chat does, with the
// membership statement its user signs.
func (d *devSignIn) nameGroup(ctx context.Context, w http.ResponseWriter, r *http.Request, app *devAppClient) {
	name, id, ok := devReadName(ctx, w, r, app, "groups", "group ")
	if !ok {
		return
	}
	d.groups.remember(name)
	devWriteJSON(w, http.StatusOK, map[string]string{"name": name, "identity": id})
}

func (d *devSignIn) resolveNames(ctx context.Context, w http.ResponseWriter, r *http.Request, app *devAppClient) {
	var req struct {
		Names []string `json:"names"`
	}
	if err := devReadJSON(r, &req); err != nil {
		devError(w, codes.InvalidArgument, err.Error())
		return
	}
	if len(req.Names) == 0 || len(req.Names) > devMaxUsers {
		devError(w, codes.InvalidArgument, fmt.Sprintf("give 1 to %d names", devMaxUsers))
		return
	}
	var names []string
	for _, n := range req.Names {
		name, err := devName(n)
		if err != nil {
			devError(w, codes.InvalidArgument, err.Error())
			return
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	d.answerNames(ctx, w, app, "users", names)
}

// answerNames answers {kind: [{"name", "identity"}]} for names, in their order; kind is
// "users" or "groups".
func (d *devSignIn) answerNames(ctx context.Context, w http.ResponseWriter, app *devAppClient, kind string, names []string) {
	type named struct {
		Name     string `json:"name"`
		Identity string `json:"identity"`
	}
	out := []named{}
	if len(names) > 0 {
		ids, err := app.resolve(ctx, kind, names)
		if err != nil {
			devCallError(w, err)
			return
		}
		for _, n := range names {
			out = append(out, named{Name: n, Identity: ids[n]})
		}
	}
	devWriteJSON(w, http.StatusOK, map[string]any{kind: out})
}

// resolve maps the app's user ids (kind "users") or group ids ("groups") to
// identities, failing unless every name has one.
func (a *devAppClient) resolve(ctx context.Context, kind string, names []string) (map[string]string, error) {
	req := &identityv1.ResolveIdentitiesRequest{Uids: names}
	if kind == "groups" {
		req = &identityv1.ResolveIdentitiesRequest{Guids: names}
	}
	resp, err := a.identity.ResolveIdentities(ctx, req)
	if err != nil {
		return nil, err
	}
	ids := resp.GetUsers()
	if kind == "groups" {
		ids = resp.GetGroups()
	}
	for _, n := range names {
		if ids[n] == "" {
			return nil, status.Errorf(codes.Internal, "the identity service resolved no identity for %q", n)
		}
	}
	return ids, nil
}

// devRefusal says why r may not use the dev routes, or "" when it may. The caller must
// be on this machine (its TCP peer a loopback address), the request must name a
// loopback host (so a page of another site that a DNS rebinding points at 127.0.0.1
// is refused), and a browser's Origin, when sent, must be a page of this machine.
func devRefusal(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err != nil || !loopbackHost(host) {
		return "the development sign-in answers callers on this machine (loopback) only"
	}
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	if !loopbackHost(host) {
		return fmt.Sprintf("the development sign-in answers requests to a loopback host (127.0.0.1, localhost, [::1]) only, not %q", r.Host)
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !loopbackHost(u.Hostname()) {
			return fmt.Sprintf("the development sign-in answers pages served from this machine only, not %q", origin)
		}
	}
	return ""
}

// loopbackHost reports whether host (no port; brackets allowed) is a loopback address
// or localhost.
func loopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return host != "" && tlsconf.IsLoopback(host)
}

// devName checks a typed name and returns it without surrounding spaces.
func devName(s string) (string, error) {
	name := strings.TrimSpace(s)
	switch {
	case name == "":
		return "", errors.New("name: type a name to sign in as")
	case len(name) > devMaxName:
		return "", fmt.Errorf("name: at most %d bytes", devMaxName)
	case !utf8.ValidString(name):
		return "", errors.New("name: not valid UTF-8")
	}
	for _, c := range name {
		if !unicode.IsPrint(c) {
			return "", fmt.Errorf("name: %q holds a control or invisible character", name)
		}
	}
	return name, nil
}

// devReadJSON decodes r's body (one JSON object, no unknown fields) into v.
func devReadJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, devMaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	if dec.More() {
		return errors.New("body: one JSON object only")
	}
	return nil
}

// devCallError answers a failed call to the identity service with its code and message.
func devCallError(w http.ResponseWriter, err error) {
	s := status.Convert(err)
	if s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded {
		devError(w, codes.Unavailable, "the identity service did not answer; try again in a moment")
		return
	}
	devError(w, s.Code(), s.Message())
}

// devError writes an error of the gateway's shape.
func devError(w http.ResponseWriter, code codes.Code, msg string) {
	devWriteJSON(w, runtime.HTTPStatusFromCode(code), map[string]any{"code": code, "message": msg, "details": []any{}})
}

func devWriteJSON(w http.ResponseWriter, httpStatus int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(httpStatus)
	json.NewEncoder(w).Encode(v)
}
