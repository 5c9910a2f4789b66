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
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
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
