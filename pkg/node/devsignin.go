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
//
// A name is the app's own user id, exactly as `umbra login NAME` uses it, so the web
// chat's alice is the CLI's alice.

const (
	// devUsersFile lists the names that signed in, for the web chat's contact list.
	devUsersFile = "dev-users.json"
	// devMaxName is the longest name, in bytes.
	devMaxName = 64
	// devMaxUsers bounds the list of names (one ResolveIdentities call resolves it).
	devMaxUsers = 1000
	// devMaxBody bounds a request body to the dev routes.
	devMaxBody = 64 << 10
)

// devSignIn serves the dev routes.
type devSignIn struct {
	log       *zap.Logger
	usersPath string
	// app is set once the node is ready; until then every call is refused with 503.
	app atomic.Pointer[devAppClient]

	mu    sync.Mutex
	users []string // names that signed in, in order of first sign-in
}

// devAppClient calls the identity service as the development app's backend.
type devAppClient struct {
	identity identityv1.IdentityServiceClient
	apiKey   string
}

// devUsers is dev-users.json.
type devUsers struct {
	Names []string `json:"names"`
}

// newDevSignIn returns the dev routes' handler for a data folder, with the names that
// signed in before (a damaged list is started afresh: it holds no secret).
func newDevSignIn(dataDir string, log *zap.Logger) *devSignIn {
	d := &devSignIn{log: log, usersPath: filepath.Join(dataDir, devUsersFile)}
	b, err := os.ReadFile(d.usersPath)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("dev sign-in: cannot read the list of names; starting with none", zap.Error(err))
		}
		return d
	}
	var u devUsers
	if err := json.Unmarshal(b, &u); err != nil {
		log.Warn("dev sign-in: the list of names is damaged; starting with none", zap.String("file", d.usersPath), zap.Error(err))
		return d
	}
	for _, n := range u.Names {
		if name, err := devName(n); err == nil && !slices.Contains(d.users, name) && len(d.users) < devMaxUsers {
			d.users = append(d.users, name)
		}
	}
	return d
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
	method, ok := map[string]string{"/dev/sign-in": http.MethodPost, "/dev/users": http.MethodGet, "/dev/resolve": http.MethodPost}[r.URL.Path]
	switch {
	case !ok:
		devError(w, codes.NotFound, fmt.Sprintf("no route for %s %s; the dev routes are POST /dev/sign-in, GET /dev/users and POST /dev/resolve", r.Method, r.URL.Path))
		return
	case r.Method != method:
		w.Header().Set("Allow", method)
		devWriteJSON(w, http.StatusMethodNotAllowed, map[string]any{"code": codes.Unimplemented, "message": fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path), "details": []any{}})
		return
	}
	if method == http.MethodPost {
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
	switch r.URL.Path {
	case "/dev/sign-in":
		d.signIn(ctx, w, r, app)
	case "/dev/users":
		d.listUsers(ctx, w, app)
	case "/dev/resolve":
		d.resolveNames(ctx, w, r, app)
	}
}

func (d *devSignIn) signIn(ctx context.Context, w http.ResponseWriter, r *http.Request, app *devAppClient) {
	var req struct {
		Name string `json:"name"`
	}
	if err := devReadJSON(r, &req); err != nil {
		devError(w, codes.InvalidArgument, err.Error())
		return
	}
	name, err := devName(req.Name)
	if err != nil {
		devError(w, codes.InvalidArgument, err.Error())
		return
	}
	ids, err := app.resolve(ctx, []string{name})
	if err != nil {
		devCallError(w, err)
		return
	}
	tok, err := app.identity.IssueToken(ctx, &identityv1.IssueTokenRequest{Identity: ids[name]})
	if err != nil {
		devCallError(w, err)
		return
	}
	d.remember(name)
	d.log.Info("dev sign-in", zap.String("identity", ids[name]))
	devWriteJSON(w, http.StatusOK, map[string]string{
		"name":        name,
		"identity":    ids[name],
		"accessToken": tok.GetAccessToken(),
		"expiresAt":   tok.GetExpiresAt().AsTime().UTC().Format(time.RFC3339),
	})
}

func (d *devSignIn) listUsers(ctx context.Context, w http.ResponseWriter, app *devAppClient) {
	d.mu.Lock()
	names := slices.Clone(d.users)
	d.mu.Unlock()
	slices.Sort(names)
	d.answerUsers(ctx, w, app, names)
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
	d.answerUsers(ctx, w, app, names)
}

// answerUsers answers {"users": [{"name", "identity"}]} for names, in their order.
func (d *devSignIn) answerUsers(ctx context.Context, w http.ResponseWriter, app *devAppClient, names []string) {
	type user struct {
		Name     string `json:"name"`
		Identity string `json:"identity"`
	}
	users := []user{}
	if len(names) > 0 {
		ids, err := app.resolve(ctx, names)
		if err != nil {
			devCallError(w, err)
			return
		}
		for _, n := range names {
			users = append(users, user{Name: n, Identity: ids[n]})
		}
	}
	devWriteJSON(w, http.StatusOK, map[string]any{"users": users})
}

// resolve maps names to identities, failing unless every name has one.
func (a *devAppClient) resolve(ctx context.Context, names []string) (map[string]string, error) {
	resp, err := a.identity.ResolveIdentities(ctx, &identityv1.ResolveIdentitiesRequest{Uids: names})
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if resp.GetUsers()[n] == "" {
			return nil, status.Errorf(codes.Internal, "the identity service resolved no identity for %q", n)
		}
	}
	return resp.GetUsers(), nil
}

// remember adds name to the list of names that signed in, and saves the list when it
// changed. A list that cannot be saved costs only the contact list after a restart.
func (d *devSignIn) remember(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if slices.Contains(d.users, name) || len(d.users) >= devMaxUsers {
		return
	}
	d.users = append(d.users, name)
	b, err := json.MarshalIndent(devUsers{Names: d.users}, "", "  ")
	if err == nil {
		err = writeFileAtomic(d.usersPath, append(b, '\n'))
	}
	if err != nil {
		d.log.Warn("dev sign-in: cannot save the list of names", zap.String("file", d.usersPath), zap.Error(err))
	}
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
