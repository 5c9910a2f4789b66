package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/umbra-e2ee/umbra/internal/bench"
)

// runBench is the load generator for the published benchmarks.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("bench", args, stderr, "messaging")
	if err != nil {
		return err
	}
	fs := newFlagSet("bench "+sub, stderr)
	var cfg bench.MessagingConfig
	fs.StringVar(&cfg.Server.Addr, "server", "127.0.0.1:9090", "Umbra's gRPC address")
	fs.BoolVar(&cfg.Server.Insecure, "insecure", false, "allow plaintext beyond loopback")
	fs.StringVar(&cfg.APIKey, "api-key", "", "an app's API key, to create the run's users (umbra dev prints one)")
	fs.IntVar(&cfg.Senders, "senders", 32, "concurrent senders, each to its own recipient")
	fs.IntVar(&cfg.Subscribers, "subscribers", 32, "recipients that subscribe and measure send-to-deliver latency")
	fs.IntVar(&cfg.Size, "size", 1024, "envelope size in bytes")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to measure")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "how long to send before measuring")
	fs.Float64Var(&cfg.Rate, "rate", 0, "messages per second in all (0: as fast as acknowledgements come)")
	fs.IntVar(&cfg.Connections, "connections", 0, "gRPC connections the senders share (0: one per 8 senders)")
	fs.BoolVar(&cfg.Stream, "stream", false, "send over one SendStream per sender instead of a Send call per message")
	store := fs.String("store", "", "start the system itself over this PostgreSQL database (postgres://…; prefer UMBRA_STORE: flags show in ps) instead of driving --server, "+
		"and measure the raw PostgreSQL baseline in it (docs/benchmarks.md)")
	replicas := fs.String("replicas", "1,2", "with --store: the numbers of messaging replicas to run, one round each")
	rawDir := fs.String("raw-dir", ".", "folder for the raw bbolt baseline (put it on the server's disk)")
	noRaw := fs.Bool("no-raw", false, "skip the raw bbolt baseline")
	cpuProfile := fs.String("cpuprofile", "", "write the bench client's CPU profile of the measured run to this file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.Profile = f
	}
	var pg *benchPostgres
	if *store != "" {
		counts, err := parseReplicas(*replicas)
		if err != nil {
			return usagef(stderr, "%v", err)
		}
		pg = &benchPostgres{url: *store, replicas: counts, stdout: stdout}
	}
	fmt.Fprintf(stdout, "umbra bench messaging: %d senders, %d subscribers, %d-byte envelopes, %s (after %s warm-up)",
		cfg.Senders, cfg.Subscribers, cfg.Size, cfg.Duration, cfg.Warmup)
	if cfg.Stream {
		fmt.Fprint(stdout, ", a SendStream per sender")
	} else {
		fmt.Fprint(stdout, ", a Send call per message")
	}
	if cfg.Rate > 0 {
		fmt.Fprintf(stdout, ", paced at %.0f msgs/s", cfg.Rate)
	}
	fmt.Fprintf(stdout, "\nmachine: %d CPUs (%s), %s, %s\n\n", runtime.NumCPU(), cpuModel(), runtime.GOOS+"/"+runtime.GOARCH, time.Now().UTC().Format(time.RFC3339))

	if pg != nil {
		pg.cfg = cfg
		return pg.run(ctx)
	}
	res, err := bench.Messaging(ctx, cfg)
	if err != nil {
		return err
	}
	printMessaging(stdout, cfg, res)
	if *noRaw {
		return nil
	}
	raw, err := bench.RawDrain(ctx, bench.RawConfig{Dir: *rawDir, Writers: cfg.Senders, ValueSize: cfg.Size, Duration: cfg.Duration})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "raw bbolt baseline    %10.0f writes/s (%d writers, one fsynced transaction per drained batch, same value size)\n", raw.Rate(), cfg.Senders)
	fmt.Fprintf(stdout, "sent / raw            %10.1f %%\n", 100*res.SentRate()/raw.Rate())
	return nil
}

// printMessaging prints what a messaging run measured.
func printMessaging(stdout io.Writer, cfg bench.MessagingConfig, res *bench.MessagingResult) {
	fmt.Fprintf(stdout, "sent (durable acks)   %10.0f msgs/s   (%d in %s)\n", res.SentRate(), res.Sent, res.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(stdout, "delivered             %10.0f msgs/s   (%d to %d subscribers)\n", res.DeliveredRate(), res.Delivered, cfg.Subscribers)
	if len(res.Latencies) > 0 {
		fmt.Fprintf(stdout, "send-to-deliver       p50 %s   p99 %s   max %s\n",
			ms(res.Percentile(50)), ms(res.Percentile(99)), ms(res.Latencies[len(res.Latencies)-1]))
	}
	if len(res.Refused) > 0 {
		var parts []string
		for code, n := range res.Refused {
			parts = append(parts, fmt.Sprintf("%s: %d", code, n))
		}
		sort.Strings(parts)
		fmt.Fprintf(stdout, "refused               %s (raise the server's --send-rate/--send-burst for a benchmark)\n", strings.Join(parts, ", "))
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// cpuModel reads the CPU model from /proc/cpuinfo where there is one.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
