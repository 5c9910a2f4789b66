package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/durable"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	"github.com/umbra-e2ee/umbra/services/backup"
)

// DevConfig configures `umbra dev`.
type DevConfig struct {
	GRPCAddr string
	HTTPAddr string
	// MetricsAddr is where /metrics is served (loopback); empty serves none.
	MetricsAddr string
	DataDir     string
	// AdminCredential overrides the generated one.
	AdminCredential string
	CORSOrigins     []string
	// Pprof serves Go's profiler on the gateway's listener (loopback).
	Pprof bool
	// Out receives the banner with the credentials.
	Out io.Writer
	// Tune, when set, adjusts the node's configuration (rate limits, retention...)
	// before it starts.
	Tune func(*Config)
	// AllowEmptyStores is Config.AllowEmptyStores.
	AllowEmptyStores []string
	// Web, when set, is the web chat's build output, served by the gateway at /.
	Web fs.FS
}

// DevCredentials are what `umbra dev` keeps in its data folder so that a restart prints
// the same credentials. The identity service itself stores only the API key's hash; this
// file exists for development only, with mode 0600.
type DevCredentials struct {
	AdminCredential string `json:"admin_credential"`
	AppID           string `json:"app_id"`
	APIKey          string `json:"api_key"`
	// BackupSecret is the backup service's server secret. In production it lives in a
	// Kubernetes Secret, never beside backup.db; dev keeps it here for convenience.
	BackupSecret string `json:"backup_secret"`
}

const devCredentialsFile = "dev-credentials.json"

// RunDev runs every service and the gateway on loopback with data in cfg.DataDir, and on
// first start creates a development app whose API key it prints with the admin
// credential (on every start).
func RunDev(ctx context.Context, cfg DevConfig, log *zap.Logger) error {
	for _, a := range []string{cfg.GRPCAddr, cfg.HTTPAddr} {
		if err := checkLoopback(a); err != nil {
			return err
		}
	}
	if cfg.MetricsAddr != "" {
		if err := checkLoopback(cfg.MetricsAddr); err != nil {
			return err
		}
	}
	credPath := filepath.Join(cfg.DataDir, devCredentialsFile)
	creds, err := loadDevCredentials(credPath)
	if err != nil {
		return err
	}
	if cfg.AdminCredential != "" {
		creds.AdminCredential = cfg.AdminCredential
	}
	if creds.AdminCredential == "" {
		if creds.AdminCredential, err = randomSecret("uadm_"); err != nil {
			return err
		}
	}
	if creds.BackupSecret == "" {
		if creds.BackupSecret, err = randomSecret("ubak_"); err != nil {
			return err
		}
	}
	// The service token lives only as long as the process: nothing outside it needs it.
	serviceToken, err := randomSecret("usvc_")
	if err != nil {
		return err
	}
	signIn := newDevSignIn(cfg.DataDir, log.Named("dev"))
	ncfg := Config{
		Roles:   gateway.Services(),
		DataDir: cfg.DataDir,
		GRPC:    grpcserver.Config{Addr: cfg.GRPCAddr},
		Gateway: &gateway.Config{
			Addr: cfg.HTTPAddr, CORSOrigins: cfg.CORSOrigins, Pprof: cfg.Pprof,
			// The web chat and its development sign-in: umbra dev only.
			Web: cfg.Web, Dev: signIn,
		},
		MetricsAddr:     cfg.MetricsAddr,
		AdminCredential: creds.AdminCredential,
		ServiceToken:    serviceToken,
		Backup:          backup.Config{Secret: []byte(creds.BackupSecret)},
	}
	ncfg.AllowEmptyStores = cfg.AllowEmptyStores
	ncfg.Ready = func(ctx context.Context, addrs Addrs) error {
		if err := ensureDevApp(ctx, loopbackAddr(addrs.GRPC), creds); err != nil {
			return fmt.Errorf("dev: create the development app: %w", err)
		}
		if err := saveDevCredentials(credPath, creds); err != nil {
			return err
		}
		conn, err := grpcclient.Dial(grpcclient.Config{Addr: loopbackAddr(addrs.GRPC)})
		if err != nil {
			return fmt.Errorf("dev: the sign-in's connection to the identity service: %w", err)
		}
		context.AfterFunc(ctx, func() { conn.Close() })
		signIn.ready(identityv1.NewIdentityServiceClient(conn), creds.APIKey)
		printBanner(cfg.Out, addrs, cfg.DataDir, creds, cfg.Web != nil)
		return nil
	}
	if cfg.Tune != nil {
		cfg.Tune(&ncfg)
	}
	return Run(ctx, ncfg, log)
}

func checkLoopback(addr string) error {
	if addr == "" {
		return errors.New("dev: an address is empty")
	}
	if !tlsconf.IsLoopback(addr) {
		return fmt.Errorf("dev: %s is not a loopback address; umbra dev listens on loopback only (use umbra serve beyond it)", addr)
	}
	return nil
}

func randomSecret(prefix string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

func loadDevCredentials(path string) (*DevCredentials, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &DevCredentials{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	c := &DevCredentials{}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("dev: %s is corrupt (delete it to start afresh): %w", path, err)
	}
	return c, nil
}

// saveDevCredentials writes c to path, unless path holds them already: a restart
// writes nothing, so that `umbra dev` starts on a full disk.
func saveDevCredentials(path string, c *DevCredentials) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	if err := durable.WriteFile(path, b); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	return nil
}

// ensureDevApp creates the development app through the identity service's own API,
// unless the saved one still exists.
func ensureDevApp(ctx context.Context, grpcAddr string, c *DevCredentials) error {
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: grpcAddr})
	if err != nil {
		return err
	}
	defer conn.Close()
	client := identityv1.NewIdentityServiceClient(conn)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.AdminCredential)
	if c.AppID != "" {
		_, err := client.GetApp(ctx, &identityv1.GetAppRequest{AppId: c.AppID})
		if err == nil {
			return nil
		}
		if status.Code(err) != codes.NotFound {
			return err
		}
	}
	resp, err := client.CreateApp(ctx, &identityv1.CreateAppRequest{DisplayName: "Umbra development app"})
	if err != nil {
		return err
	}
	c.AppID, c.APIKey = resp.GetApp().GetAppId(), resp.GetApiKey()
	return nil
}

func printBanner(w io.Writer, addrs Addrs, dataDir string, c *DevCredentials, web bool) {
	if w == nil {
		return
	}
	more := ""
	if addrs.Metrics != "" {
		more = fmt.Sprintf("  Metrics: http://%s/metrics\n", addrs.Metrics)
	}
	if web {
		more += fmt.Sprintf("  Web chat: http://%s/   (open it in two windows and sign in with any name: development only)\n", addrs.Gateway)
	}
	fmt.Fprintf(w, `Umbra is running in development mode (loopback only, data in %s).

  gRPC:  %s
  REST:  http://%s   (OpenAPI at /openapi.json)
%s
Development app %s. To use it from this shell:

  export UMBRA_API_KEY=%s
  export UMBRA_ADMIN_TOKEN=%s

The API key acts for the app backend (it issues tokens); keep both out of clients.
`, dataDir, addrs.GRPC, addrs.Gateway, more, c.AppID, c.APIKey, c.AdminCredential)
}
