// Synchronous hot standbys of a cluster, their promotion, and URLs naming several hosts.

package pgtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

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
