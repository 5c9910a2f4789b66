package witness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/internal/ktlog"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
)

// DefaultListen is the witness's HTTP address by default: loopback.
const DefaultListen = "127.0.0.1:8091"

// RunConfig is `umbra witness`'s configuration.
type RunConfig struct {
	Config
	// KeyFile holds the witness's private key (ReadKeyFile); Config.Signer is read
	// from it when nil.
	KeyFile string
	// Log is where the log is.
	Log ktlog.Config
	// Listen is the HTTP API's address; plaintext beyond loopback only with Insecure.
	Listen   string
	Insecure bool
	// Ready, if set, is called once the witness is listening.
	Ready func(w *Witness, addr net.Addr)
}

// Run runs a witness until ctx ends.
func Run(ctx context.Context, cfg RunConfig, logger *zap.Logger) error {
	if cfg.Signer == nil {
		s, err := ReadKeyFile(cfg.KeyFile)
		if err != nil {
			return err
		}
		cfg.Signer = s
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if err := tlsconf.CheckPlaintext("witness HTTP listener", cfg.Listen, cfg.Insecure); err != nil {
		return err
	}
	log, err := ktlog.Dial(cfg.Log)
	if err != nil {
		return err
	}
	defer log.Close()
	w, err := New(ctx, log, cfg.Config, logger)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	logger.Info("witness started", zap.String("witness", w.Key().String()), zap.Strings("log_keys", w.LogKeys()), zap.String("listen", lis.Addr().String()))
	if cfg.Ready != nil {
		cfg.Ready(w, lis.Addr())
	}
	return w.Serve(ctx, lis)
}

// WriteKeyFile writes a new witness key named name to path (mode 0600; an existing
// file is never overwritten) and returns it.
func WriteKeyFile(path, name string, rand io.Reader) (*kt.WitnessSigner, error) {
	s, err := kt.GenerateWitnessSigner(name, rand)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("%s exists: a witness keeps its key (remove the file to start a new witness, with a new name)", path)
	}
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(s.String() + "\n"); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	return s, f.Close()
}

// ReadKeyFile reads a witness key that WriteKeyFile wrote. A file others can read is
// refused: the key is what makes a cosignature this witness's word.
func ReadKeyFile(path string) (*kt.WitnessSigner, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no witness key at %s: create one with umbra witness keygen", path)
	}
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("the witness key %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := kt.ParseWitnessSigner(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}
