package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/internal/bench"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// benchPostgres is `umbra bench messaging --store postgres://…`: for each number of
// messaging replicas it starts the system itself over that database (an identity, a
// card and that many messaging processes of this binary, on loopback), runs the
// messaging load against it, and then, in the same run, the raw PostgreSQL baseline
// for the same payloads and concurrency in the same database; it reports each with the
// CPU time the Umbra processes and the PostgreSQL server used per message.
//
// The database is the operator's: the bench starts no PostgreSQL of its own (so that
// the binary carries no test harness, and so that it measures the server the operator
// means), and leaves the run's rows in the services' schemas (its identities are new
// each run). docs/benchmarks.md shows how to make a throwaway cluster for it.
type benchPostgres struct {
	url      string
	localDB  bool // PostgreSQL runs on this machine: its CPU time is measured
	replicas []int
	cfg      bench.MessagingConfig
	stdout   io.Writer
}

// parseReplicas reads --replicas: a comma-separated list of counts from 1 to 8.
func parseReplicas(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 8 {
			return nil, fmt.Errorf("--replicas %q: want a comma-separated list of counts from 1 to 8", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func (b *benchPostgres) run(ctx context.Context) error {
	info, local, err := postgresInfo(ctx, b.url)
	if err != nil {
		return fmt.Errorf("bench: the database of --store: %w", err)
	}
	b.localDB = local
	fmt.Fprintf(b.stdout, "database: %s\n", info)
	for _, n := range b.replicas {
		if err := b.round(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// postgresInfo names the server and its durability settings, and says whether it is on
// this machine (a loopback address or a local socket), where /proc shows its processes.
func postgresInfo(ctx context.Context, url string) (string, bool, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", false, err
	}
	defer conn.Close(context.Background())
	var version, fsync, syncCommit, host string
	err = conn.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit'),
		coalesce(host(inet_server_addr()), 'a local socket')`).Scan(&version, &fsync, &syncCommit, &host)
	if err != nil {
		return "", false, err
	}
	ip := net.ParseIP(host)
	local := host == "a local socket" || ip != nil && ip.IsLoopback()
	return fmt.Sprintf("PostgreSQL %s at %s, fsync %s, synchronous_commit %s", version, host, fsync, syncCommit), local, nil
}

// round measures the system with n messaging replicas, then the raw baseline.
func (b *benchPostgres) round(ctx context.Context, n int) error {
	plural := "s"
	if n == 1 {
		plural = ""
	}
	fmt.Fprintf(b.stdout, "\n%d messaging replica%s:\n", n, plural)
	sys, err := startSystem(ctx, b.url, n)
	if err != nil {
		return err
	}
	defer sys.stop()

	cfg := b.cfg
	cfg.APIKey = sys.apiKey
	cfg.Server = grpcclient.Config{Addr: sys.messaging[0]}
	cfg.Replicas = nil
	for _, a := range sys.messaging[1:] {
		cfg.Replicas = append(cfg.Replicas, grpcclient.Config{Addr: a})
	}
	cfg.Identity, cfg.Card = &grpcclient.Config{Addr: sys.identity}, &grpcclient.Config{Addr: sys.card}
	umbraCPU := &bench.CPUMeter{PIDs: sys.pids}
	pgPIDs := func() []int {
		if !b.localDB {
			return nil // another machine's process ids: not ours to read
		}
		pids, _ := bench.PostgresPIDs(ctx, b.url)
		return pids
	}
	pgCPU := &bench.CPUMeter{PIDs: pgPIDs}
	cfg.OnMeasure = func(start bool) {
		if start {
			umbraCPU.Start()
			pgCPU.Start()
			return
		}
		umbraCPU.Stop()
		pgCPU.Stop()
	}
	res, err := bench.Messaging(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%w (the servers' logs are in %s)", err, sys.dir)
	}
	sys.stop()
	os.RemoveAll(sys.dir) // kept only when the run failed, for its logs
	printMessaging(b.stdout, b.cfg, res)
	perMsg := func(m *bench.CPUMeter, count int) string {
		used, err := m.Used()
		switch {
		case m == pgCPU && !b.localDB:
			return "not measured (the database is not on this machine)"
		case err != nil:
			return fmt.Sprintf("not measured (%v)", err)
		case count == 0:
			return "not measured (nothing sent)"
		}
		return fmt.Sprintf("%6.0f µs/msg   (%.2f cores)", float64(used.Microseconds())/float64(count), used.Seconds()/res.Elapsed.Seconds())
	}
	fmt.Fprintf(b.stdout, "Umbra CPU             %s, its %d processes\n", perMsg(umbraCPU, res.Sent), n+2)
	fmt.Fprintf(b.stdout, "PostgreSQL CPU        %s, its processes in pg_stat_activity\n", perMsg(pgCPU, res.Sent))

	rawCPU := &bench.CPUMeter{PIDs: pgPIDs}
	raw, syncCommit, err := bench.RawPostgres(ctx, bench.RawPostgresConfig{URL: b.url, Writers: b.cfg.Senders, ValueSize: b.cfg.Size, Duration: b.cfg.Duration,
		OnMeasure: func(start bool) {
			if start {
				rawCPU.Start()
			} else {
				rawCPU.Stop()
			}
		}})
	if err != nil {
		return err
	}
	fmt.Fprintf(b.stdout, "raw PostgreSQL        %10.0f writes/s (%d writers, one transaction per drained batch: BEGIN, one multi-row INSERT and COMMIT in one round trip; synchronous_commit %s; same value size)\n",
		raw.Rate(), b.cfg.Senders, syncCommit)
	if used, err := rawCPU.Used(); err == nil && raw.Writes > 0 && b.localDB {
		fmt.Fprintf(b.stdout, "PostgreSQL CPU, raw    %6.0f µs/write (%.2f cores)\n", float64(used.Microseconds())/float64(raw.Writes), used.Seconds()/raw.Elapsed.Seconds())
	}
	fmt.Fprintf(b.stdout, "sent / raw            %10.1f %%\n", 100*res.SentRate()/raw.Rate())
	return nil
}

// system is the processes of one round: identity, card and the messaging replicas,
// each `umbra serve <role>` over the database, on loopback.
type system struct {
	dir            string // their logs
	identity, card string
	messaging      []string
	apiKey         string
	procs          []*proc
	stopped        bool
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited
}

func (s *system) pids() []int {
	var out []int
	for _, p := range s.procs {
		out = append(out, p.cmd.Process.Pid)
	}
	return out
}

// stop stops the processes (SIGTERM, then SIGKILL after 15 s).
func (s *system) stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	for _, p := range s.procs {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range s.procs {
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}

func freeLoopback() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func randomToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// startSystem starts identity, card and n messaging replicas over the database at url,
// waits until they answer, and makes an app for the run.
func startSystem(ctx context.Context, url string, n int) (_ *system, err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "umbra-bench-pg-")
	if err != nil {
		return nil, err
	}
	sys := &system{dir: dir}
	defer func() {
		if err != nil {
			sys.stop()
		}
	}()
	admin, service := randomToken(), randomToken()
	// The connection string and the secrets go through the environment: flags show in ps.
	env := append(os.Environ(), "UMBRA_STORE="+url, "UMBRA_ADMIN_TOKEN="+admin, "UMBRA_SERVICE_TOKEN="+service)
	start := func(role, name string, args ...string) (string, error) {
		addr, err := freeLoopback()
		if err != nil {
			return "", err
		}
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			return "", err
		}
		defer logf.Close()
		cmd := exec.Command(self, append([]string{"serve", role, "--insecure", "--grpc-addr", addr, "--data", filepath.Join(dir, "data-"+name),
			"--send-rate", "1000000", "--send-burst", "1000000", "--log-level", "warn"}, args...)...)
		cmd.Env, cmd.Stdout, cmd.Stderr = env, logf, logf
		if err := cmd.Start(); err != nil {
			return "", err
		}
		p := &proc{cmd: cmd, done: make(chan struct{})}
		go func() { cmd.Wait(); close(p.done) }()
		sys.procs = append(sys.procs, p)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				return addr, nil
			}
			select {
			case <-p.done:
				out, _ := os.ReadFile(logf.Name())
				return "", fmt.Errorf("bench: umbra serve %s exited: %s", role, strings.TrimSpace(string(out)))
			default:
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return "", fmt.Errorf("bench: umbra serve %s did not listen on %s within 30 s (its log: %s)", role, addr, logf.Name())
			}
		}
	}
	if sys.identity, err = start("identity", "identity"); err != nil {
		return nil, err
	}
	if sys.card, err = start("card", "card", "--identity-addr", sys.identity); err != nil {
		return nil, err
	}
	for i := range n {
		a, err := start("messaging", fmt.Sprintf("messaging-%d", i+1), "--identity-addr", sys.identity, "--card-addr", sys.card)
		if err != nil {
			return nil, err
		}
		sys.messaging = append(sys.messaging, a)
	}
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: sys.identity})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	created, err := identityv1.NewIdentityServiceClient(conn).CreateApp(metadata.AppendToOutgoingContext(cctx, "authorization", "Bearer "+admin),
		&identityv1.CreateAppRequest{DisplayName: "umbra bench"}, grpc.WaitForReady(true))
	if err != nil {
		return nil, fmt.Errorf("bench: create the run's app: %w", err)
	}
	sys.apiKey = created.GetApiKey()
	if sys.apiKey == "" {
		return nil, errors.New("bench: the identity service gave the run's app no API key")
	}
	// Each messaging replica answers UNAVAILABLE until it has heard from the identity
	// service (the revocation feed): wait until each answers a user's call.
	appCtx := metadata.AppendToOutgoingContext(cctx, "authorization", "Bearer "+sys.apiKey)
	ids := identityv1.NewIdentityServiceClient(conn)
	users, err := ids.ResolveIdentities(appCtx, &identityv1.ResolveIdentitiesRequest{Uids: []string{"bench-probe"}})
	if err != nil {
		return nil, fmt.Errorf("bench: make the probe identity: %w", err)
	}
	tok, err := ids.IssueToken(appCtx, &identityv1.IssueTokenRequest{Identity: users.GetUsers()["bench-probe"]})
	if err != nil {
		return nil, fmt.Errorf("bench: issue the probe's token: %w", err)
	}
	userCtx := metadata.AppendToOutgoingContext(cctx, "authorization", "Bearer "+tok.GetAccessToken())
	for _, addr := range sys.messaging {
		mconn, err := grpcclient.Dial(grpcclient.Config{Addr: addr})
		if err != nil {
			return nil, err
		}
		client := messagingv1.NewMessagingServiceClient(mconn)
		for {
			_, err = client.ListConversations(userCtx, &messagingv1.ListConversationsRequest{}, grpc.WaitForReady(true))
			if status.Code(err) != codes.Unavailable || cctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		mconn.Close()
		if err != nil {
			return nil, fmt.Errorf("bench: the messaging replica at %s: %w", addr, err)
		}
	}
	return sys, nil
}
