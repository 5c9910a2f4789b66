package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// clientFlags are the flags every client command shares.
type clientFlags struct {
	home           string
	user           string
	server         string
	apiKey         string
	passphraseFile string
	noPassphrase   bool
	insecure       bool
	tls            tlsconf.Client
	serviceKeys    string
	logKeys        string
	// typed maps the identities resolve returned to the names the user typed.
	typed map[string]string
}

func (f *clientFlags) register(fs *flag.FlagSet) {
	home, _ := os.UserHomeDir()
	fs.StringVar(&f.home, "home", filepath.Join(home, ".umbra"), "folder for the CLI's sessions and keystores")
	fs.StringVar(&f.user, "user", "", "local profile to act as (the name given to umbra login)")
	fs.StringVar(&f.server, "server", "127.0.0.1:9090", "Umbra's gRPC address")
	fs.StringVar(&f.apiKey, "api-key", "", "the app's API key, for umbra login and for resolving user names (development)")
	fs.StringVar(&f.passphraseFile, "passphrase-file", "", "file holding the keystore passphrase (default: $UMBRA_PASSPHRASE)")
	fs.BoolVar(&f.noPassphrase, "no-passphrase", false, "keep the keystore unencrypted (file mode 0600 only)")
	fs.BoolVar(&f.insecure, "insecure", false, "allow plaintext beyond loopback")
	fs.StringVar(&f.tls.CAFile, "tls-ca", "", "CA that signs the server's certificate (enables TLS)")
	fs.StringVar(&f.serviceKeys, "service-key", "", "the card service's keys to trust, key_id:base64-public-key, comma-separated (umbra card service-key prints them); default: the keys the server lists the first time")
	fs.StringVar(&f.logKeys, "log-key", "", "the key transparency log keys to trust, comma-separated verifier keys (umbra card log-key prints it); default: the key the server names the first time")
}

func (f *clientFlags) grpcConfig() grpcclient.Config {
	return grpcclient.Config{Addr: f.server, TLS: f.tls, Insecure: f.insecure}
}

func (f *clientFlags) profileDir() (string, error) {
	if f.user == "" {
		b, err := os.ReadFile(filepath.Join(f.home, "current"))
		if err != nil {
			return "", errors.New("no user: run umbra login <name>, or pass --user")
		}
		f.user = strings.TrimSpace(string(b))
	}
	if f.user == "" || strings.ContainsAny(f.user, `/\`) || f.user == "." || f.user == ".." {
		return "", fmt.Errorf("--user %q is not a usable profile name", f.user)
	}
	return filepath.Join(f.home, "profiles", f.user), nil
}

// session is what umbra login keeps for one profile.
type session struct {
	Name        string    `json:"name"`
	Identity    string    `json:"identity"`
	AccessToken string    `json:"access_token"`
	ExpiresAt   time.Time `json:"expires_at"`
}

func (f *clientFlags) loadSession() (*session, string, error) {
	dir, err := f.profileDir()
	if err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(filepath.Join(dir, "session.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("profile %q has no session: run umbra login %s", f.user, f.user)
	}
	if err != nil {
		return nil, "", err
	}
	s := &session{}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, "", fmt.Errorf("profile %q: corrupt session file: %w", f.user, err)
	}
	return s, dir, nil
}

func writeFile0600(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (f *clientFlags) saveSession(dir string, s *session) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFile0600(filepath.Join(dir, "session.json"), append(b, '\n'))
}

// appCall runs fn with a connection that carries the app API key: what an app backend
// does. The CLI does it for development only.
func (f *clientFlags) appCall(ctx context.Context, fn func(context.Context, identityv1.IdentityServiceClient) error) error {
	if f.apiKey == "" {
		return errors.New("this needs the app's API key: set UMBRA_API_KEY (umbra dev prints it) or pass --api-key")
	}
	conn, err := grpcclient.Dial(f.grpcConfig())
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+f.apiKey)
	return fn(ctx, identityv1.NewIdentityServiceClient(conn))
}

// appResolve resolves, with the API key, the app's own user and group ids req names.
func (f *clientFlags) appResolve(ctx context.Context, req *identityv1.ResolveIdentitiesRequest) (*identityv1.ResolveIdentitiesResponse, error) {
	var resp *identityv1.ResolveIdentitiesResponse
	err := f.appCall(ctx, func(ctx context.Context, c identityv1.IdentityServiceClient) error {
		var err error
		resp, err = c.ResolveIdentities(ctx, req)
		return err
	})
	return resp, err
}

// issue gets a token for identity with the API key.
func (f *clientFlags) issue(ctx context.Context, identity string) (string, time.Time, error) {
	var tok string
	var exp time.Time
	err := f.appCall(ctx, func(ctx context.Context, c identityv1.IdentityServiceClient) error {
		resp, err := c.IssueToken(ctx, &identityv1.IssueTokenRequest{Identity: identity, Ttl: durationpb.New(time.Hour)})
		if err != nil {
			return err
		}
		tok, exp = resp.GetAccessToken(), resp.GetExpiresAt().AsTime()
		return nil
	})
	return tok, exp, err
}

// resetGrant gets a reset grant for identity with the API key: what the app backend
// does once it has re-authenticated a user who lost every key.
func (f *clientFlags) resetGrant(ctx context.Context, identity string) (string, error) {
	var grant string
	err := f.appCall(ctx, func(ctx context.Context, c identityv1.IdentityServiceClient) error {
		resp, err := c.IssueResetGrant(ctx, &identityv1.IssueResetGrantRequest{Identity: identity})
		if err != nil {
			return err
		}
		grant = resp.GetResetGrant()
		return nil
	})
	return grant, err
}

// clientFor opens the client (client) and resolves names, names or identities, to
// their identities (resolve): how every command that addresses people starts. The
// caller closes the client.
func (f *clientFlags) clientFor(ctx context.Context, names []string) (*sdk.Client, *session, []string, error) {
	c, s, err := f.client(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	ids, err := f.resolve(ctx, names)
	if err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	return c, s, ids, nil
}

// resolve turns user names into identities: an identity stays as it is, a name is
// looked up among the profiles logged in here, else resolved with the API key.
func (f *clientFlags) resolve(ctx context.Context, names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	if f.typed == nil {
		f.typed = map[string]string{}
	}
	var unknown []string
	for _, n := range names {
		if ident.ValidUser("user", n) == nil {
			out = append(out, n)
			continue
		}
		if id := f.knownName(n); id != "" {
			out = append(out, id)
			f.typed[id] = n
			continue
		}
		unknown = append(unknown, n)
	}
	if len(unknown) == 0 {
		return out, nil
	}
	resp, err := f.appResolve(ctx, &identityv1.ResolveIdentitiesRequest{Uids: unknown})
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", strings.Join(unknown, ", "), err)
	}
	for _, n := range unknown {
		out = append(out, resp.GetUsers()[n])
		f.typed[resp.GetUsers()[n]] = n
	}
	return out, nil
}

// profileName returns the name of the profile logged in here as identity, if any.
func (f *clientFlags) profileName(identity string) string {
	entries, err := os.ReadDir(filepath.Join(f.home, "profiles"))
	if err != nil {
		return ""
	}
	for _, e := range entries {
		if f.knownName(e.Name()) == identity {
			return e.Name()
		}
	}
	return ""
}

// knownName returns the identity of a profile logged in on this machine.
func (f *clientFlags) knownName(name string) string {
	b, err := os.ReadFile(filepath.Join(f.home, "profiles", name, "session.json"))
	if err != nil {
		return ""
	}
	var s session
	if json.Unmarshal(b, &s) != nil || s.Name != name {
		return ""
	}
	return s.Identity
}

func (f *clientFlags) passphrase() ([]byte, error) {
	if f.noPassphrase {
		return nil, nil
	}
	if f.passphraseFile != "" {
		b, err := os.ReadFile(f.passphraseFile)
		if err != nil {
			return nil, err
		}
		return typed(strings.TrimRight(string(b), "\r\n")), nil
	}
	if p := os.Getenv("UMBRA_PASSPHRASE"); p != "" {
		return typed(p), nil
	}
	return nil, errors.New("the keystore needs a passphrase: set UMBRA_PASSPHRASE, pass --passphrase-file, or --no-passphrase to keep it unencrypted")
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// client opens the SDK for the current profile. Its tokens come from the session, and
// are renewed with the API key when it is at hand.
func (f *clientFlags) client(ctx context.Context) (*sdk.Client, *session, error) {
	s, dir, err := f.loadSession()
	if err != nil {
		return nil, nil, err
	}
	pass, err := f.passphrase()
	if err != nil {
		return nil, nil, err
	}
	token := func(ctx context.Context) (string, error) {
		if time.Until(s.ExpiresAt) > time.Minute {
			return s.AccessToken, nil
		}
		tok, exp, err := f.issue(ctx, s.Identity)
		if err != nil {
			return "", fmt.Errorf("the session of %s has expired: run umbra login %s (%w)", f.user, f.user, err)
		}
		s.AccessToken, s.ExpiresAt = tok, exp
		return tok, f.saveSession(dir, s)
	}
	serviceKeys, err := parseServiceKeys(f.serviceKeys)
	if err != nil {
		return nil, nil, err
	}
	// The CLI refuses a contact's key change until the user accepts it (umbra trust).
	c, err := sdk.New(ctx, sdk.Config{
		Addr:            f.server,
		TLS:             f.tls,
		Insecure:        f.insecure,
		Token:           token,
		KeystorePath:    filepath.Join(dir, "keystore"),
		Passphrase:      pass,
		NoPassphrase:    f.noPassphrase,
		KeyChangePolicy: sdk.KeyChangeRefuse,
		ServiceKeys:     serviceKeys,
		LogKeys:         splitList(f.logKeys),
	})
	if err != nil {
		return nil, nil, err
	}
	return c, s, nil
}
