package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newFlagSet returns a flag set whose usage goes to w.
func newFlagSet(name string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("umbra "+name, flag.ContinueOnError)
	fs.SetOutput(w)
	return fs
}

// newClientFlagSet is newFlagSet with the flags of a command that acts as a user of
// the CLI (clientFlags), registered first.
func newClientFlagSet(name string, w io.Writer) (*flag.FlagSet, *clientFlags) {
	fs := newFlagSet(name, w)
	f := &clientFlags{}
	f.register(fs)
	return fs, f
}

// flagsBeforeSubcommand separates, in the arguments subcommand returns, the flags that
// came before the subcommand from the rest. No command-line argument can contain a NUL
// byte, so it never collides with one.
const flagsBeforeSubcommand = "\x00flags before the subcommand\x00"

// subcommand finds which of subs args names and returns it with the other arguments,
// for parse. Flags may come before the subcommand as well as after it: `umbra keys
// --server X init` is `umbra keys init --server X`. Until the subcommand's flags are
// defined nobody knows which flags take a value, so a flag written "--name value"
// before the subcommand is taken to consume the next argument unless that argument is a
// subcommand or a flag; parse then parses the leading flags with the subcommand's flag
// set, and says so if they do not parse, rather than guess. ("--name=value" is never
// ambiguous.)
func subcommand(name string, args []string, stderr io.Writer, subs ...string) (string, []string, error) {
	usage := func() {
		fmt.Fprintf(stderr, "usage: umbra %s <%s> [flags]   (flags may also come before the subcommand)\n", name, strings.Join(subs, "|"))
	}
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") && len(args[i]) > 1 {
		switch strings.TrimLeft(args[i], "-") {
		case "h", "help":
			usage()
			return "", nil, flag.ErrHelp
		case "": // "--": the subcommand follows
			fmt.Fprintf(stderr, "umbra %s: the subcommand comes before \"--\"\n", name)
			usage()
			return "", nil, errUsage
		}
		flagArg := args[i]
		i++
		if !strings.Contains(flagArg, "=") && i < len(args) && !strings.HasPrefix(args[i], "-") && !slices.Contains(subs, args[i]) {
			i++ // its value
		}
	}
	if i == len(args) {
		if i > 0 {
			fmt.Fprintf(stderr, "umbra %s: no subcommand after the flags %s\n", name, strings.Join(args, " "))
		}
		usage()
		return "", nil, errUsage
	}
	sub := args[i]
	if !slices.Contains(subs, sub) {
		fmt.Fprintf(stderr, "umbra %s: unknown subcommand %q (want %s)\n", name, sub, strings.Join(subs, ", "))
		return "", nil, errUsage
	}
	if i == 0 {
		return sub, args[1:], nil
	}
	out := append(slices.Clone(args[:i]), flagsBeforeSubcommand)
	return sub, append(out, args[i+1:]...), nil
}

// parse parses args, then fills every flag not given on the command line from
// UMBRA_<FLAG> in the environment. Flags that came before the subcommand (see
// subcommand) are parsed first, and must all be flags of this subcommand.
func parse(fs *flag.FlagSet, args []string) error {
	if i := slices.Index(args, flagsBeforeSubcommand); i >= 0 {
		lead := args[:i]
		args = args[i+1:]
		if err := fs.Parse(lead); err != nil {
			if err == flag.ErrHelp {
				return err
			}
			return usagef(fs.Output(), "(in the flags before the subcommand: %s)", strings.Join(lead, " "))
		}
		if fs.NArg() > 0 {
			return usagef(fs.Output(), "%s: %q, before the subcommand, is not a flag or a flag's value: write arguments after the subcommand", fs.Name(), fs.Arg(0))
		}
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return errUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := envName(f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, serr)
			}
		}
	})
	return err
}

func envName(flagName string) string {
	return "UMBRA_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// listFlag is a comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	*l = nil
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// newLogger builds the process's one logger: JSON for servers, console for dev.
func newLogger(level string, console bool, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if console {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)), nil
}
