// Package pgtest starts throwaway PostgreSQL servers for tests: Debian's binaries,
// initdb into a temporary folder, the server on a free loopback port, durable (fsync on)
// as production is, and gone when the test binary ends.
//
// A test package that uses the shared cluster calls Main from its TestMain, so that the
// cluster is stopped when the tests end:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// and each test asks for a database of its own:
//
//	db := pgtest.NewDatabase(t) // db.URL is a postgres:// connection string
//
// When the binaries are missing the test is skipped, saying how to install them, unless
// UMBRA_TEST_POSTGRES=require (scripts/test and CI set it): then it fails.
package pgtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// RequireEnv is the variable that, set to "require", turns a missing PostgreSQL into a
// failure instead of a skip.
const RequireEnv = "UMBRA_TEST_POSTGRES"

// InstallHint says how to get the binaries.
const InstallHint = "PostgreSQL's server binaries were not found (looked in /usr/lib/postgresql/*/bin and pg_config --bindir): install them with `apt-get install postgresql` (scripts/test-deps does it)"

// Superuser is the cluster's superuser, which tests connect as unless they make a role.
const Superuser = "postgres"

// ErrNoBinaries is returned by Start when PostgreSQL's binaries are missing.
var ErrNoBinaries = errors.New(InstallHint)

// Cluster is one PostgreSQL server in a temporary folder.
type Cluster struct {
	bin      string // folder of initdb and postgres
	dir      string // the temporary folder: data/ and the socket
	data     string
	port     int
	password string // the superuser's
	cred     *syscall.Credential
	logPath  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{} // closed when cmd has exited
	frozen bool          // stopped with SIGSTOP (Freeze)
}

// Options tune a cluster.
type Options struct {
	// Settings are extra `-c name=value` server settings.
	Settings map[string]string
}

// libDir holds Debian's PostgreSQL versions, one folder each.
var libDir = "/usr/lib/postgresql"

// BinDir returns the folder of PostgreSQL's server binaries: the highest version under
// /usr/lib/postgresql (Debian's layout), else pg_config --bindir.
func BinDir() (string, error) {
	matches, _ := filepath.Glob(filepath.Join(libDir, "*/bin/postgres"))
	version := func(p string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return v
	}
	slices.SortFunc(matches, func(a, b string) int { return version(b) - version(a) })
	for _, m := range matches {
		dir := filepath.Dir(m)
		if usable(dir) {
			return dir, nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); usable(dir) {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
}

func usable(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// serverUser returns the credential to run the server with: none when this process is
// not root, else Debian's postgres user (initdb and postgres refuse to run as root).
func serverUser() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, and PostgreSQL refuses to: the unprivileged user `postgres` (made by Debian's postgresql package) is missing: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgtest: user postgres has ids %s:%s", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// Start initialises a new cluster in a temporary folder and starts it on a free
// loopback port. Stop it with Close.
func Start(opts Options) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	cred, err := serverUser()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tempBase(cred), "umbra-pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin, dir: dir, data: filepath.Join(dir, "data"), cred: cred, logPath: filepath.Join(dir, "server.log"), password: rand.Text()}
	if err := c.init(opts); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var last error
	for range 5 { // a free port can be taken between finding it and binding it
		if c.port, err = freePort(); err != nil {
			return nil, err
		}
		if last = c.Restart(); last == nil {
			return c, nil
		}
	}
	c.Close()
	return nil, last
}

// tempBase is where the cluster's folder goes: the temporary folder, unless the server's
// user could not reach it (a TMPDIR inside root's home), then /tmp.
func tempBase(cred *syscall.Credential) string {
	base := os.TempDir()
	if cred == nil {
		return base
	}
	for dir := base; ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return "/tmp"
		}
		if dir == filepath.Dir(dir) {
			return base
		}
	}
}

// init runs initdb: the superuser with a password over TCP (scram-sha-256), trust on
// the socket in the temporary folder, which only the server's user can reach.
func (c *Cluster) init(opts Options) error {
	pwfile := filepath.Join(c.dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(c.password+"\n"), 0o600); err != nil {
		return err
	}
	if err := c.chown(c.dir, pwfile); err != nil {
		return err
	}
	out, err := c.command(filepath.Join(c.bin, "initdb"),
		"--pgdata", c.data, "--username", Superuser, "--pwfile", pwfile,
		"--auth-host", "scram-sha-256", "--auth-local", "trust",
		"--encoding", "UTF8", "--locale", "C", "--no-instructions").CombinedOutput()
	os.Remove(pwfile)
	if err != nil {
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": c.dir,
		"fsync":                   "on", // durability is what the tests are about
		"synchronous_commit":      "on",
		"shared_buffers":          "16MB",
		"max_connections":         "200",
		"log_min_messages":        "warning",
		"logging_collector":       "off",
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	return appendSettings(c.data, settings)
}

// command runs name as the server's user.
func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	return cmd
}

func (c *Cluster) chown(paths ...string) error {
	if c.cred == nil {
		return nil
	}
	for _, p := range paths {
		if err := os.Chown(p, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return err
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Restart starts the server again after Stop or Kill, on the same port and data.
func (c *Cluster) Restart() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return errors.New("pgtest: the server is running")
	}
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := c.command(filepath.Join(c.bin, "postgres"), "-D", c.data, "-p", strconv.Itoa(c.port))
	cmd.Stdout, cmd.Stderr = logf, logf
	// The server dies with the test binary, even one killed before it could stop it
	// (its backends follow once they see it gone).
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	c.cmd, c.done = cmd, done

	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			cancel()
			return nil
		}
		cancel()
		select {
		case <-done:
			c.cmd = nil
			return fmt.Errorf("pgtest: postgres exited at start:\n%s", c.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			c.cmd = nil
			return fmt.Errorf("pgtest: postgres did not accept connections within a minute: %v\n%s", err, c.logTail())
		}
	}
}

func (c *Cluster) logTail() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Stop shuts the server down cleanly (a fast shutdown: clients are disconnected) and
// waits for it.
func (c *Cluster) Stop() { c.signal(syscall.SIGINT) }

// Kill kills the server at once (SIGKILL to the postmaster and every backend), as a
// crash of the machine would.
func (c *Cluster) Kill() { c.signal(syscall.SIGKILL) }

// Freeze stops the server and every backend with SIGSTOP, as a host that hangs or
// drops off the network: its connections stay open, new ones are accepted by the
// kernel, and nothing answers. Thaw resumes it; Stop, Kill and Close kill it (a frozen
// server cannot shut down cleanly).
func (c *Cluster) Freeze() { c.stopCont(syscall.SIGSTOP) }

// Thaw resumes a frozen server (SIGCONT).
func (c *Cluster) Thaw() { c.stopCont(syscall.SIGCONT) }

func (c *Cluster) stopCont(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	// The postmaster first, so that it forks no backend after its children are listed.
	pid := c.cmd.Process.Pid
	syscall.Kill(pid, sig)
	for _, p := range childrenOf(pid) {
		syscall.Kill(p, sig)
	}
	c.frozen = sig == syscall.SIGSTOP
}

func (c *Cluster) signal(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	if c.frozen {
		sig, c.frozen = syscall.SIGKILL, false
	}
	// Each backend of PostgreSQL's is a session of its own: a crash kills them one by
	// one, found before the postmaster dies and they lose their parent.
	var procs []int
	if sig == syscall.SIGKILL {
		procs = childrenOf(c.cmd.Process.Pid)
	}
	c.cmd.Process.Signal(sig)
	for _, p := range procs {
		syscall.Kill(p, sig)
	}
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
	// A backend that outlived the postmaster holds its shared memory, and a restart
	// would refuse to start beside it: wait for them all.
	for _, p := range procs {
		for i := 0; i < 400 && alive(p); i++ {
			time.Sleep(25 * time.Millisecond)
		}
	}
	c.cmd = nil
}

// childrenOf returns the processes whose parent is pid.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _ := procStat(p); ppid == pid {
			out = append(out, p)
		}
	}
	return out
}

// procStat returns a process's parent and state from /proc/<pid>/stat.
func procStat(pid int) (ppid int, state string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, ""
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, ""
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, ""
	}
	ppid, _ = strconv.Atoi(f[1])
	return ppid, f[0]
}

// alive reports whether pid is a process that has not exited (a zombie has).
func alive(pid int) bool {
	_, state := procStat(pid)
	return state != "" && state != "Z" && state != "X"
}

// Close stops the server and removes its folder.
func (c *Cluster) Close() {
	c.Stop()
	os.RemoveAll(c.dir)
}

// Addr is the server's host:port.
func (c *Cluster) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)) }

// Port is the server's port.
func (c *Cluster) Port() int { return c.port }

// Password is the superuser's password.
func (c *Cluster) Password() string { return c.password }

// URL returns a connection string to database as the superuser.
func (c *Cluster) URL(database string) string {
	return c.URLAs(Superuser, c.password, database)
}

// URLAs returns a connection string to database as role with password.
func (c *Cluster) URLAs(role, password, database string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(role, password), Host: c.Addr(), Path: "/" + database, RawQuery: "sslmode=disable"}
	return u.String()
}

// Exec runs sql as the superuser in database.
func (c *Cluster) Exec(database, sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL(database))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

var databases atomic.Int64

// CreateDatabase creates a new, empty database and returns it.
func (c *Cluster) CreateDatabase() (*Database, error) {
	name := fmt.Sprintf("umbra_test_%d", databases.Add(1))
	if err := c.Exec("postgres", "CREATE DATABASE "+name+" TEMPLATE template0"); err != nil {
		return nil, fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return &Database{Cluster: c, Name: name, URL: c.URL(name)}, nil
}

// Database is one database of a cluster.
type Database struct {
	Cluster *Cluster
	Name    string
	// URL connects to it as the superuser.
	URL string
}

// Exec runs sql in the database as the superuser, failing t on an error.
func (d *Database) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if err := d.Cluster.Exec(d.Name, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// URLAs connects to the database as role with password.
func (d *Database) URLAs(role, password string) string {
	return d.Cluster.URLAs(role, password, d.Name)
}

// Conn connects to the database as the superuser; the connection closes when the test
// ends.
func (d *Database) Conn(t testing.TB) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), d.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Query runs sql in d as the superuser and returns its rows' one column.
func Query[T any](t testing.TB, d *Database, sql string, args ...any) []T {
	t.Helper()
	rows, err := d.Conn(t).Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[T])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The shared cluster of a test binary, started by the first test that needs it.
var shared struct {
	once    sync.Once
	cluster *Cluster
	err     error
}

// Main runs the tests of a package, then stops the shared cluster if one started.
func Main(m *testing.M) {
	code := m.Run()
	if shared.cluster != nil {
		shared.cluster.Close()
	}
	os.Exit(code)
}

// Unavailable skips t, or fails it when UMBRA_TEST_POSTGRES=require, when err is
// ErrNoBinaries; any other error fails t.
func Unavailable(t testing.TB, err error) {
	t.Helper()
	switch {
	case !errors.Is(err, ErrNoBinaries):
		t.Fatal(err)
	case os.Getenv(RequireEnv) == "require":
		t.Fatalf("%v (%s=require: PostgreSQL tests may not be skipped)", err, RequireEnv)
	default:
		t.Skipf("%v (set %s=require to fail instead)", err, RequireEnv)
	}
}

// Shared returns the test binary's cluster, starting it on first use. The package's
// TestMain must call Main, which stops it.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	shared.once.Do(func() { shared.cluster, shared.err = Start(Options{}) })
	if shared.err != nil {
		Unavailable(t, shared.err)
	}
	return shared.cluster
}

// NewDatabase returns a new, empty database of the shared cluster, dropped when t ends.
func NewDatabase(t testing.TB) *Database {
	t.Helper()
	c := Shared(t)
	db, err := c.CreateDatabase()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Exec("postgres", "DROP DATABASE IF EXISTS "+db.Name+" WITH (FORCE)") })
	return db
}

// NewCluster starts a cluster of t's own (to stop, kill or restart), closed when t ends.
func NewCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c, err := Start(opts)
	if err != nil {
		Unavailable(t, err)
	}
	t.Cleanup(c.Close)
	return c
}

// OpenStore opens a service's PostgreSQL store for a test with open (given a context
// bounded by timeout and the test's logger), and closes it when the test ends.
func OpenStore[S interface{ Close() error }](t testing.TB, timeout time.Duration, open func(ctx context.Context, log *zap.Logger) (S, error)) S {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := open(ctx, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Replicator is the replication role StartStandby makes on the primary.
const Replicator = "umbra_replicator"

// StartStandby makes a synchronous hot standby of primary on loopback, as a failover
// pair is run in production: a replication role on the primary (Replicator, with a
// password of its own), a base backup of the running primary (pg_basebackup, the WAL
// streamed along) into a new temporary folder, standby.signal and primary_conninfo
// there (what pg_basebackup -R writes), the standby started on a free loopback port and
// streaming, and then the primary's synchronous_standby_names set so that every commit
// waits until the standby has flushed it (synchronous_commit on): an acknowledged
// commit survives the primary's loss. Promote turns the standby into a primary.
//
// The standby's superuser and password are the primary's (the base backup copies
// them). Close stops it and removes its folder.
func StartStandby(primary *Cluster) (*Cluster, error) {
	replPassword := rand.Text()
	if err := primary.Exec("postgres", fmt.Sprintf("CREATE ROLE %s WITH REPLICATION LOGIN PASSWORD '%s'", Replicator, replPassword)); err != nil {
		return nil, fmt.Errorf("pgtest: the replication role: %w", err)
	}
	dir, err := os.MkdirTemp(tempBase(primary.cred), "umbra-pgtest-standby-")
	if err != nil {
		return nil, err
	}
	s := &Cluster{bin: primary.bin, dir: dir, data: filepath.Join(dir, "data"), cred: primary.cred,
		logPath: filepath.Join(dir, "server.log"), password: primary.password}
	if err := s.chown(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	name := "standby_" + strconv.Itoa(os.Getpid()) + "_" + strconv.FormatInt(databases.Add(1), 10)
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s application_name=%s sslmode=disable", primary.port, Replicator, replPassword, name)
	cmd := s.command(filepath.Join(s.bin, "pg_basebackup"), "--pgdata", s.data, "--wal-method", "stream",
		"--checkpoint", "fast", "--no-password", "--dbname", conninfo)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: pg_basebackup: %w\n%s", err, out)
	}
	// What -R writes, and the standby's own socket folder; no synchronous standby of
	// its own, so that once promoted alone its commits do not wait for one.
	settings := map[string]string{
		"primary_conninfo":          conninfo,
		"unix_socket_directories":   s.dir,
		"synchronous_standby_names": "",
		"hot_standby":               "on",
	}
	if err := appendSettings(s.data, settings); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	signal := filepath.Join(s.data, "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := s.chown(signal); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var last error
	for range 5 {
		if s.port, err = freePort(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if last = s.Restart(); last == nil {
			break
		}
	}
	if last != nil {
		s.Close()
		return nil, last
	}
	if err := primary.waitStandby(name, "streaming", "async"); err != nil {
		s.Close()
		return nil, err
	}
	if err := primary.Exec("postgres", fmt.Sprintf("ALTER SYSTEM SET synchronous_standby_names = '%s'", name)); err != nil {
		s.Close()
		return nil, err
	}
	if err := primary.Exec("postgres", "SELECT pg_reload_conf()"); err != nil {
		s.Close()
		return nil, err
	}
	if err := primary.waitStandby(name, "streaming", "sync"); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// waitStandby waits (30 s at most) until the primary sees the standby name in state
// with sync_state.
func (c *Cluster) waitStandby(name, state, sync string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var gotState, gotSync string
		err := func() error {
			conn, err := pgx.Connect(ctx, c.URL("postgres"))
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			return conn.QueryRow(ctx, "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1", name).Scan(&gotState, &gotSync)
		}()
		cancel()
		if err == nil && gotState == state && gotSync == sync {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: the standby %s is %q/%q on the primary 30 s on (%v); want %q/%q", name, gotState, gotSync, err, state, sync)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// appendSettings appends settings to the postgresql.conf of the cluster in data; the
// last line of a setting wins.
func appendSettings(data string, settings map[string]string) error {
	var conf strings.Builder
	conf.WriteString("\n# pgtest\n")
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&conf, "%s = '%s'\n", k, strings.ReplaceAll(settings[k], "'", "''"))
	}
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(conf.String()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// NewStandby starts a synchronous standby of primary (StartStandby) for t, closed when
// t ends.
func NewStandby(t testing.TB, primary *Cluster) *Cluster {
	t.Helper()
	s, err := StartStandby(primary)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Promote makes a standby the primary (pg_promote) and waits (60 s at most) until it
// accepts writes.
func (c *Cluster) Promote() error {
	ctx, cancel := context.WithTimeout(context.Background(), 70*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(true, 60)").Scan(&ok); err != nil {
		return fmt.Errorf("pgtest: promote: %w", err)
	}
	if !ok {
		return errors.New("pgtest: the standby was not promoted within 60 s")
	}
	return nil
}

// MultiHostURL is a connection string to database, as the superuser, that names the
// hosts of every cluster given, in order, and asks for the one that accepts writes
// (target_session_attrs=read-write): after a failover new connections reach the new
// primary. The clusters share the superuser's password (a standby's is its primary's).
func MultiHostURL(database string, clusters ...*Cluster) string {
	hosts := make([]string, len(clusters))
	for i, c := range clusters {
		hosts[i] = c.Addr()
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(Superuser, clusters[0].password), Host: strings.Join(hosts, ","), Path: "/" + database,
		RawQuery: "sslmode=disable&target_session_attrs=read-write"}
	return u.String()
}
