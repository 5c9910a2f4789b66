package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupCommands backs up alice's keys with the real binary on one device and
// restores them on fresh devices (empty homes): with the password, then with the
// recovery key; a wrong password says how many attempts remain; the password changes;
// reset deletes the backup. Passwords come from files, standard input and the
// environment, never from the command line.
func TestBackupCommands(t *testing.T) {
	// The server runs in the test process: a whole node, as umbra dev would run it.
	c := startCLINode(t)
	c.env = append(c.env, "UMBRA_API_KEY="+c.app.APIKey, "UMBRA_SERVER="+c.n.GRPC, "UMBRA_PASSPHRASE=a local keystore passphrase")
	work := c.work
	// umbra runs the binary as on device (a home folder of its own), with stdin and
	// extra environment variables.
	umbra := func(device, stdin string, env []string, args ...string) cliResult {
		return c.on(device, stdin, env, args...)
	}
	ok := func(device, stdin string, env []string, args ...string) string {
		return c.succeeded(c.on(device, stdin, env, args...), args)
	}
	fails := func(want, device, stdin string, env []string, args ...string) {
		t.Helper()
		r := umbra(device, stdin, env, args...)
		if r.exit != 1 || !strings.Contains(r.stderr, want) {
			t.Fatalf("umbra %v exited %d with %q; want 1 and %q", args, r.exit, r.stderr, want)
		}
	}
	pwFile := filepath.Join(work, "password.txt")
	if err := os.WriteFile(pwFile, []byte("my backup password\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	ok("laptop", "", nil, "login", "alice")
	ok("laptop", "", nil, "keys", "init")
	ok("laptop", "", nil, "login", "bob")
	ok("laptop", "", nil, "keys", "init")
	ok("laptop", "", nil, "encrypt", "--user", "bob", "--to", "alice", "--out", filepath.Join(work, "msg.bin"), "hello alice")
	fails("no password", "laptop", "", nil, "backup", "create", "--user", "alice")
	if out := ok("laptop", "", nil, "backup", "create", "--user", "alice", "--password-file", pwFile); !strings.Contains(out, "backed up (version 1)") {
		t.Fatalf("backup create: %q", out)
	}
	recoveryKey := strings.TrimSpace(ok("laptop", "", nil, "backup", "recovery-key", "--user", "alice"))
	if len(recoveryKey) != 44 || strings.Count(recoveryKey, "-") != 8 {
		t.Fatalf("recovery key %q", recoveryKey)
	}
	status := ok("laptop", "", nil, "backup", "status", "--user", "alice")
	if !strings.Contains(status, "password  version 1, 10 of 10 attempts left") || !strings.Contains(status, "recovery  version 1") {
		t.Fatalf("backup status:\n%s", status)
	}

	// A phone with an empty home: no keys until the restore.
	ok("phone", "", nil, "login", "alice")
	fails("no private key", "phone", "", nil, "decrypt", "--from", "bob", filepath.Join(work, "msg.bin"))
	fails("9 attempts remain", "phone", "not my password\n", nil, "backup", "restore", "--password-stdin")
	ok("phone", "my backup password\n", nil, "backup", "restore", "--password-stdin")
	if out := ok("phone", "", nil, "decrypt", "--from", "bob", filepath.Join(work, "msg.bin")); !strings.Contains(out, "hello alice") {
		t.Fatalf("decrypt on the phone: %q", out)
	}
	fails("already holds keys", "phone", "", []string{"UMBRA_BACKUP_PASSWORD=my backup password"}, "backup", "restore")

	// A tablet restores with the recovery key, typed in lower case.
	ok("tablet", "", nil, "login", "alice")
	ok("tablet", strings.ToLower(recoveryKey)+"\n", nil, "backup", "restore", "--recovery-key")
	if out := ok("tablet", "", nil, "decrypt", "--from", "bob", filepath.Join(work, "msg.bin")); !strings.Contains(out, "hello alice") {
		t.Fatalf("decrypt on the tablet: %q", out)
	}

	// Change of password from standard input (old, then new); the old one stops working.
	// The new one is typed with "é" as "e" and a combining accent on the phone, and as
	// one code point on the watch: both are normalised to NFC.
	ok("phone", "my backup password\nmy new password, cafe\u0301\n", nil, "backup", "change-password", "--password-stdin")
	ok("watch", "", nil, "login", "alice")
	fails("attempts remain", "watch", "", []string{"UMBRA_BACKUP_PASSWORD=my backup password"}, "backup", "restore")
	ok("watch", "", []string{"UMBRA_BACKUP_PASSWORD=my new password, caf\u00e9"}, "backup", "restore")

	// Reset deletes the password backup; the recovery one stays until reset too.
	ok("laptop", "", nil, "backup", "reset", "--user", "alice")
	if status := ok("laptop", "", nil, "backup", "status", "--user", "alice"); strings.Contains(status, "password ") || !strings.Contains(status, "recovery ") {
		t.Fatalf("status after reset:\n%s", status)
	}
	ok("laptop", "", nil, "backup", "reset", "--user", "alice", "--recovery-key")
	if status := ok("laptop", "", nil, "backup", "status", "--user", "alice"); !strings.Contains(status, "has no backup") {
		t.Fatalf("status after both resets:\n%s", status)
	}
	fails("no backup", "laptop", "", nil, "backup", "reset", "--user", "alice")
	// A password on the command line is not a thing.
	if r := umbra("laptop", "", nil, "backup", "create", "--user", "alice", "--password", "x"); r.exit != 2 {
		t.Fatalf("--password on the command line: exit %d, %q", r.exit, r.stderr)
	}
}
