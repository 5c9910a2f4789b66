package main

import (
	"errors"
	"io"
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
