package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// backupFlags are where the backup commands read their secrets: never from the
// command line, where other users of the machine could see them.
type backupFlags struct {
	clientFlags
	passwordFile    string
	newPasswordFile string
	recoveryKeyFile string
	stdin           bool
	recovery        bool
}

func (f *backupFlags) register(fs *flag.FlagSet, sub string) {
	f.clientFlags.register(fs)
	switch sub {
	case "create", "restore", "change-password":
		fs.StringVar(&f.passwordFile, "password-file", "", "file holding the backup password (default: $UMBRA_BACKUP_PASSWORD)")
		fs.BoolVar(&f.stdin, "password-stdin", false, "read the backup password from the first line of standard input (change-password: the old one, then the new one)")
	}
	switch sub {
	case "change-password":
		fs.StringVar(&f.newPasswordFile, "new-password-file", "", "file holding the new backup password (default: $UMBRA_BACKUP_NEW_PASSWORD)")
	case "restore":
		fs.BoolVar(&f.recovery, "recovery-key", false, "restore with the recovery key instead of the password: read from --recovery-key-file, $UMBRA_BACKUP_RECOVERY_KEY, or standard input")
		fs.StringVar(&f.recoveryKeyFile, "recovery-key-file", "", "file holding the recovery key (implies --recovery-key)")
	case "reset":
		fs.BoolVar(&f.recovery, "recovery-key", false, "delete the recovery-key backup instead of the password backup")
	}
}

// secret reads one secret: from file if given, else from the environment variable
// env, else from in when fromStdin. Only the line end is trimmed.
func secret(what, file, env string, fromStdin bool, in *bufio.Reader) ([]byte, error) {
	var s string
	switch {
	case fromStdin:
		line, err := in.ReadString('\n')
		if err != nil && (err != io.EOF || line == "") {
			return nil, fmt.Errorf("read the %s from standard input: %w", what, err)
		}
		s = line
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		s = string(b)
	case os.Getenv(env) != "":
		s = os.Getenv(env)
	default:
		return nil, fmt.Errorf("no %s: pass --%s-file, set %s, or use --password-stdin", what, strings.ReplaceAll(what, " ", "-"), env)
	}
	s = strings.TrimRight(s, "\r\n")
	if s == "" {
		return nil, fmt.Errorf("the %s is empty", what)
	}
	return typed(s), nil
}

// typed returns the bytes of a password or passphrase as typed, normalised to Unicode
// NFC when it is UTF-8 (docs/wire-format.md §7.3 and §10.2): "é" is one code point on
// one keyboard and "e" and a combining accent on another, and both must open the same
// backup or keystore. Bytes that are not UTF-8 are used as they are.
func typed(s string) []byte {
	if !utf8.ValidString(s) {
		return []byte(s)
	}
	return []byte(norm.NFC.String(s))
}

// runBackup manages the current profile's key backup on the server: create, restore,
// change-password, reset, recovery-key, status.
func runBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("backup", args, stderr, "create", "restore", "change-password", "reset", "recovery-key", "status")
	if err != nil {
		return err
	}
	fs := newFlagSet("backup "+sub, stderr)
	var f backupFlags
	f.register(fs, sub)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef(stderr, "umbra backup %s takes no arguments (secrets are read from files, the environment or standard input)", sub)
	}
	in := bufio.NewReader(os.Stdin)
	password := func() ([]byte, error) {
		return secret("password", f.passwordFile, "UMBRA_BACKUP_PASSWORD", f.stdin, in)
	}
	c, s, err := f.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	switch sub {
	case "create":
		pw, err := password()
		if err != nil {
			return err
		}
		info, err := c.BackupPrivateKey(ctx, pw)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "keys of %s backed up (version %d)\n", s.Name, info.GetVersion())
	case "restore":
		if f.recovery || f.recoveryKeyFile != "" {
			key, err := secret("recovery key", f.recoveryKeyFile, "UMBRA_BACKUP_RECOVERY_KEY", f.recoveryKeyFile == "" && os.Getenv("UMBRA_BACKUP_RECOVERY_KEY") == "", in)
			if err != nil {
				return err
			}
			err = c.RestoreFromRecoveryKey(ctx, string(key))
			if err != nil {
				return err
			}
		} else {
			pw, err := password()
			if err != nil {
				return err
			}
			if err := c.RestorePrivateKey(ctx, pw); err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, "keys of %s restored into this device's keystore\n", s.Name)
	case "change-password":
		old, err := password()
		if err != nil {
			return err
		}
		pw, err := secret("new password", f.newPasswordFile, "UMBRA_BACKUP_NEW_PASSWORD", f.stdin, in)
		if err != nil {
			return err
		}
		info, err := c.ChangePassword(ctx, old, pw)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "backup password of %s changed (version %d)\n", s.Name, info.GetVersion())
	case "reset":
		if f.recovery {
			if err := c.DeleteRecoveryKey(ctx); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "recovery-key backup of %s deleted\n", s.Name)
			return nil
		}
		if err := c.ResetBackup(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "password backup of %s deleted; run umbra backup create to back up again\n", s.Name)
	case "recovery-key":
		key, err := c.CreateRecoveryKey(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "Write this recovery key down and keep it safe: it restores every key of %s\n"+
			"(umbra backup restore --recovery-key). Any previous recovery key no longer works.\n", s.Name)
		fmt.Fprintln(stdout, key)
	case "status":
		infos, err := c.Backups(ctx)
		if err != nil {
			return err
		}
		if len(infos) == 0 {
			fmt.Fprintf(stdout, "%s has no backup\n", s.Name)
		}
		for _, b := range infos {
			slot := strings.ToLower(strings.TrimPrefix(b.GetSlot().String(), "BACKUP_SLOT_"))
			fmt.Fprintf(stdout, "%-9s version %d, %d of %d attempts left, Argon2id t=%d m=%d KiB p=%d, %d bytes, stored %s\n",
				slot, b.GetVersion(), b.GetRemainingAttempts(), b.GetMaxAttempts(), b.GetKdf().GetTime(), b.GetKdf().GetMemoryKib(),
				b.GetKdf().GetThreads(), b.GetCiphertextSize(), b.GetUpdatedAt().AsTime().Local().Format(time.RFC3339))
		}
	}
	return nil
}
