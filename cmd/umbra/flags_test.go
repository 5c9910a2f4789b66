package main

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParseFallsBackToEnvironment(t *testing.T) {
	t.Setenv("UMBRA_GRPC_ADDR", "127.0.0.1:7000")
	t.Setenv("UMBRA_CORS_ORIGINS", "https://a.example, https://b.example")
	t.Setenv("UMBRA_LOG_LEVEL", "debug")
	fs := newFlagSet("test", io.Discard)
	grpcAddr := fs.String("grpc-addr", "127.0.0.1:9090", "")
	logLevel := fs.String("log-level", "info", "")
	var cors listFlag
	fs.Var(&cors, "cors-origins", "")
	if err := parse(fs, []string{"--log-level", "warn"}); err != nil {
		t.Fatal(err)
	}
	if *grpcAddr != "127.0.0.1:7000" {
		t.Errorf("grpc-addr = %q; want the environment's", *grpcAddr)
	}
	if *logLevel != "warn" {
		t.Errorf("log-level = %q; the command line must win over the environment", *logLevel)
	}
	if len(cors) != 2 || cors[1] != "https://b.example" {
		t.Errorf("cors-origins = %q", cors)
	}
}

func TestParseRejectsBadEnvironmentValues(t *testing.T) {
	t.Setenv("UMBRA_MAX_BODY_BYTES", "lots")
	fs := newFlagSet("test", io.Discard)
	fs.Int64("max-body-bytes", 1, "")
	err := parse(fs, nil)
	if err == nil || errors.Is(err, errUsage) {
		t.Fatalf("parse = %v; want an error naming UMBRA_MAX_BODY_BYTES", err)
	}
}

// TestTypedSecretsAreNFC: passwords and passphrases are normalised to NFC when they
// are UTF-8, and used as they are when they are not.
func TestTypedSecretsAreNFC(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"cafe\u0301", "caf\u00e9"},
		{"caf\u00e9", "caf\u00e9"},
		{"\uFB01le", "\uFB01le"}, // NFC, not NFKC: a ligature stays
		{"plain ascii", "plain ascii"},
		{"\xff\xfe not utf-8 e\u0301", "\xff\xfe not utf-8 e\u0301"},
	} {
		if got := string(typed(tc.in)); got != tc.want {
			t.Errorf("typed(%+q) = %+q, want %+q", tc.in, got, tc.want)
		}
	}
	t.Setenv("UMBRA_PASSPHRASE", "cafe\u0301")
	if p, err := (&clientFlags{}).passphrase(); err != nil || string(p) != "caf\u00e9" {
		t.Errorf("passphrase from UMBRA_PASSPHRASE: %+q, %v", p, err)
	}
}

// TestFlagsBeforeTheSubcommand: a command group's flags may come before its
// subcommand, and what cannot be read unambiguously there is refused with a message
// that says where the flags go.
func TestFlagsBeforeTheSubcommand(t *testing.T) {
	subs := []string{"init", "show", "rotate"}
	for _, tc := range []struct {
		name     string
		args     []string
		sub      string
		server   string
		user     string
		insecure bool
		rest     []string
		err      error  // errUsage or flag.ErrHelp when refused
		stderr   string // part of the message when refused
	}{
		{name: "after, as always", args: []string{"init", "--server", "h:1"}, sub: "init", server: "h:1"},
		{name: "before", args: []string{"--server", "h:1", "init"}, sub: "init", server: "h:1"},
		{name: "before, with =", args: []string{"--server=h:1", "init"}, sub: "init", server: "h:1"},
		{name: "single dash", args: []string{"-server", "h:1", "show"}, sub: "show", server: "h:1"},
		{name: "before and after", args: []string{"--server", "h:1", "--insecure", "show", "--user", "bob", "extra"}, sub: "show", server: "h:1", user: "bob", insecure: true, rest: []string{"extra"}},
		{name: "a boolean flag right before", args: []string{"--insecure", "rotate"}, sub: "rotate", insecure: true},
		{name: "after overrides before", args: []string{"--user", "ann", "show", "--user", "bob"}, sub: "show", user: "bob"},
		{name: "value that is a subcommand's name", args: []string{"--user", "init", "init"}, err: errUsage, stderr: "flag needs an argument: -user"},
		{name: "not a flag before", args: []string{"--insecure", "stray", "init"}, err: errUsage, stderr: `"stray", before the subcommand, is not a flag`},
		{name: "unknown flag before", args: []string{"--nope", "init"}, err: errUsage, stderr: "flag provided but not defined: -nope"},
		{name: "no subcommand after the flags", args: []string{"--server", "h:1"}, err: errUsage, stderr: "no subcommand after the flags"},
		{name: "unknown subcommand", args: []string{"--server", "h:1", "bogus"}, err: errUsage, stderr: `unknown subcommand "bogus"`},
		{name: "help", args: []string{"-h"}, err: flag.ErrHelp, stderr: "flags may also come before the subcommand"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			sub, args, err := subcommand("keys", tc.args, &stderr, subs...)
			var server, user string
			var insecure bool
			if err == nil {
				fs := newFlagSet("keys "+sub, &stderr)
				fs.StringVar(&server, "server", "", "")
				fs.StringVar(&user, "user", "", "")
				fs.BoolVar(&insecure, "insecure", false, "")
				if err = parse(fs, args); err == nil {
					args = fs.Args()
				}
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) || !strings.Contains(stderr.String(), tc.stderr) {
					t.Fatalf("err %v, stderr %q; want %v and %q", err, stderr.String(), tc.err, tc.stderr)
				}
				return
			}
			if err != nil || sub != tc.sub || server != tc.server || user != tc.user || insecure != tc.insecure || !slices.Equal(args, tc.rest) {
				t.Fatalf("sub %q server %q user %q insecure %v rest %q, %v (%s); want %q %q %q %v %q",
					sub, server, user, insecure, args, err, stderr.String(), tc.sub, tc.server, tc.user, tc.insecure, tc.rest)
			}
		})
	}
}
