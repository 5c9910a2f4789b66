package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"

	"github.com/umbra-e2ee/umbra/internal/witness"
)

// runWitness is `umbra witness`: follow a card service's key transparency log and
// cosign its checkpoints (internal/witness), or `umbra witness keygen` / `key`.
func runWitness(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "keygen":
			return witnessKeygen(args[1:], stdout, stderr)
		case "key":
			return witnessKey(args[1:], stdout, stderr)
		}
	}
	fs := newFlagSet("witness", stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: umbra witness [flags]          follow a log, cosign its checkpoints, serve them\n       umbra witness keygen --name N  create the witness's key, print its verifier key\n       umbra witness key              print the verifier key of the witness's key\n\n")
		fs.PrintDefaults()
	}
	var cfg witness.RunConfig
	dir := fs.String("witness-dir", "umbra-witness", "folder for the witness's state (state.json: the last checkpoint cosigned) and fork evidence (forks.jsonl)")
	fs.StringVar(&cfg.KeyFile, "key-file", "", "the witness's private key (default: witness.key in --witness-dir; umbra witness keygen writes it)")
	fs.StringVar(&cfg.Log.Addr, "server", "127.0.0.1:9090", "the card service's gRPC address, or its REST gateway's URL (http://host:8080)")
	var logKeys listFlag
	fs.Var(&logKeys, "log-key", "the log's verifier keys, comma-separated (umbra card log-key prints them; during a log key rotation, the old and the new); default: those of the state file, or on the first start the one the log states")
	fs.StringVar(&cfg.Log.TLS.CAFile, "tls-ca", "", "CA that signs the card service's certificate (enables TLS)")
	fs.StringVar(&cfg.Listen, "listen", witness.DefaultListen, "address of the witness's HTTP API (loopback unless --insecure)")
	fs.DurationVar(&cfg.Interval, "interval", witness.DefaultInterval, "how often to poll the log for a new checkpoint")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "allow plaintext beyond loopback, to the log and for the HTTP API")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		if a := fs.Arg(0); a == "keygen" || a == "key" {
			return usagef(stderr, "umbra witness: the flags of %s go after it: umbra witness %s [flags]", a, a)
		}
		return usagef(stderr, "umbra witness: unexpected argument %q", fs.Arg(0))
	}
	cfg.Dir, cfg.LogKeys = *dir, logKeys
	if cfg.KeyFile == "" {
		cfg.KeyFile = filepath.Join(*dir, "witness.key")
	}
	cfg.Log.Insecure = cfg.Insecure
	log, err := newLogger(*logLevel, true, stderr)
	if err != nil {
		return err
	}
	defer log.Sync()
	cfg.Ready = func(w *witness.Witness, addr net.Addr) {
		fmt.Fprintf(stdout, "witness %s\nfollowing %s at %s\ncosigned checkpoints at http://%s/checkpoint, fork evidence at http://%s/forks\n",
			w.Key(), strings.Join(w.LogKeys(), ","), cfg.Log.Addr, addr, addr)
	}
	return witness.Run(ctx, cfg, log)
}

func witnessKeyFlags(name string, stderr io.Writer) (*flag.FlagSet, *string, *string) {
	fs := newFlagSet("witness "+name, stderr)
	dir := fs.String("witness-dir", "umbra-witness", "the witness's folder")
	file := fs.String("key-file", "", "the witness's private key (default: witness.key in --witness-dir)")
	return fs, dir, file
}

func keyPath(dir, file string) string {
	if file != "" {
		return file
	}
	return filepath.Join(dir, "witness.key")
}

// witnessKeygen writes a new witness key and prints its verifier key on stdout alone,
// for scripts; what it did goes to stderr.
func witnessKeygen(args []string, stdout, stderr io.Writer) error {
	fs, dir, file := witnessKeyFlags("keygen", stderr)
	name := fs.String("name", "", "the witness's name, a URL without scheme that identifies it (witness.example.com/w1)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *name == "" {
		return usagef(stderr, "umbra witness keygen: --name is required (for example --name witness.example.com/w1)")
	}
	path := keyPath(*dir, *file)
	s, err := witness.WriteKeyFile(path, *name, rand.Reader)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote the witness key to %s (mode 0600: keep it secret); its verifier key, for the clients that require this witness:\n", path)
	fmt.Fprintln(stdout, s.Key())
	return nil
}

// witnessKey prints the verifier key of an existing witness key.
func witnessKey(args []string, stdout, stderr io.Writer) error {
	fs, dir, file := witnessKeyFlags("key", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := witness.ReadKeyFile(keyPath(*dir, *file))
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, s.Key())
	return nil
}
