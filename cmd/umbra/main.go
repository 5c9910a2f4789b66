// Command umbra is Umbra's one binary: every server role, the development server, and
// the command-line client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands []command

func init() {
	commands = []command{
		{"dev", "run every service and the gateway on loopback, for development", runDev},
		{"serve", "run one role (identity|card|backup|group|messaging|gateway|all)", runServe},
		{"version", "print the version", runVersion},
		{"login", "get a token for a user with the app's API key (development)", runLogin},
		{"keys", "manage your keys: init (register), show, rotate, reset (after every key is lost)", runKeys},
		{"backup", "back up your keys under a password: create, restore, change-password, reset, recovery-key, status", runBackup},
		{"card", "the card directory: publish, revoke, find, history, service-key", runCard},
		{"trust", "what you trust of a contact's keys: show (safety number), accept (a key change), verify", runTrust},
		{"kt", "key transparency: lookup (a card with its proofs and the checkpoint), monitor (your own identity, once), audit (replay the log, check every checkpoint), checkpoint (the latest, cosigned by witnesses)", runKt},
		{"encrypt", "encrypt a message for people (--to bob,carol)", runEncrypt},
		{"decrypt", "decrypt a message (--from alice)", runDecrypt},
		{"send", "send an encrypted message (--to bob)", runSend},
		{"listen", "print your messages, decrypted, as they arrive", runListen},
		{"group", "groups: create, list, delete, add, remove, ban, leave, join, approve, invite, accept, mode, role, transfer, share, send, listen, history", runGroup},
		{"bench", "load generator: bench messaging", runBench},
		{"admin", "operate the stores: stores, backup (online), verify, restore (offline), migrate (bbolt to PostgreSQL); rotate-log-key, retire-log-key", runAdmin},
		{"demo", "the whole story against a running server, showing what it stored", runDemo},
		{"witness", "follow a key transparency log, cosign its checkpoints, report forks; keygen, key", runWitness},
	}
}

// gcPercent is the garbage collector's target (GOGC) unless the environment sets one.
// Umbra's live heap is small (tens of MiB) while its message path allocates for every
// message, so the default of 100 collects far more often than memory needs: 400 gave
// 12–26% more messages per second in `umbra bench messaging` (docs/benchmarks.md).
// GOGC and GOMEMLIMIT still override it.
const gcPercent = 400

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, stderr)
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.Is(err, errUsage):
				return 2
			}
			// A damaged store is said in one line that names the file and what to do,
			// without the layers it was found through.
			var damaged *boltdb.DamagedError
			if errors.As(err, &damaged) {
				err = damaged
			}
			fmt.Fprintf(stderr, "umbra %s: %v\n", c.name, err)
			return 1
		}
	}
	if strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(stderr, "umbra: %s: flags go after the command: umbra <command> [<subcommand>] [flags], for example umbra keys init --server host:9090\n\n", args[0])
		usage(stderr)
		return 2
	}
	fmt.Fprintf(stderr, "umbra: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

// errUsage reports bad arguments after their message was printed.
var errUsage = errors.New("usage")

// usagef prints why a command line is refused (format and a, then a newline) to w and
// returns errUsage.
func usagef(w io.Writer, format string, a ...any) error {
	fmt.Fprintf(w, format+"\n", a...)
	return errUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: umbra <command> [flags]\n\nCommands:")
	sorted := append([]command(nil), commands...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	for _, c := range sorted {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'umbra <command> -h' for a command's flags. Every flag can also be set as\nUMBRA_<FLAG> in the environment (--grpc-addr is UMBRA_GRPC_ADDR).")
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) error {
	fmt.Fprintf(stdout, "umbra %s\n", version)
	return nil
}
