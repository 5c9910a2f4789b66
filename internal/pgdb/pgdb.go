// Package pgdb is the PostgreSQL engine's plumbing that every service's PostgreSQL store
// shares: opening a connection pool from a connection string, applying the service's
// migrations (embedded in the binary, with goose) in the schema the service owns,
// refusing a schema from a newer Umbra and a database user without the rights it needs
// before writing anything, transactions retried on serialization failures, the mapping
// of PostgreSQL's errors to the kinds of pkg/errs, and a readiness check.
//
// docs/storage-postgres.md describes the engine as a whole.
package pgdb

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// DefaultOpTimeout bounds one store operation (Context): a database that does not
// answer makes requests fail with UNAVAILABLE instead of hanging.
const DefaultOpTimeout = 15 * time.Second

// DefaultConnectTimeout bounds one connection attempt when the connection string sets
// no connect_timeout.
const DefaultConnectTimeout = 5 * time.Second

// Config is how a service's store reaches its database.
type Config struct {
	// URL is the connection string: postgres://user:password@host:port/database?...
	// Several hosts with target_session_attrs=read-write reach whichever is the primary
	// after a failover. libpq's environment variables (PGPASSWORD, PGPASSFILE...) apply.
	URL string
	// Store names the service in messages: "identity".
	Store string
	// Schema is the schema the service owns (umbra_<service>): its tables and goose's
	// version table live there, and it is the connections' search_path.
	Schema string
	// Migrations holds the service's goose SQL migrations at its root
	// (00001_name.sql...), embedded in the binary.
	Migrations fs.FS
	// OpTimeout bounds one store operation; 0 means DefaultOpTimeout.
	OpTimeout time.Duration
	// Log gets the migrations applied; nil discards.
	Log *zap.Logger
}

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// DB is a service's connection pool, its schema migrated.
type DB struct {
	Pool    *pgxpool.Pool
	store   string
	schema  string
	timeout time.Duration
}

// Open connects to cfg.URL, checks the database user's rights and the schema's version,
// and applies the pending migrations. Every failure is one clear error that names what
// is wrong (never the password), and before any migration runs nothing is written: a
// schema from a newer Umbra or a user without the rights is refused untouched.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if !schemaName.MatchString(cfg.Schema) {
		return nil, fmt.Errorf("pgdb: schema name %q is not a lower-case identifier", cfg.Schema)
	}
	migrations, err := readMigrations(cfg.Migrations)
	if err != nil {
		return nil, fmt.Errorf("%s store: %w", cfg.Store, err)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("%s store: the PostgreSQL connection string does not parse: %s", cfg.Store, redact(parseReason(err), cfg.URL))
	}
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		pcfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	pcfg.ConnConfig.RuntimeParams["search_path"] = cfg.Schema
	pcfg.ConnConfig.RuntimeParams["application_name"] = "umbra-" + cfg.Store
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("%s store: %s", cfg.Store, redact(err.Error(), cfg.URL))
	}
	db := &DB{Pool: pool, store: cfg.Store, schema: cfg.Schema, timeout: cfg.OpTimeout}
	if db.timeout <= 0 {
		db.timeout = DefaultOpTimeout
	}
	if err := db.prepare(ctx, cfg, pcfg, migrations); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%s store: %s", cfg.Store, oneLine(redact(err.Error(), cfg.URL)))
	}
	return db, nil
}

// oneLine joins the lines of msg, for a start-up error said in one line.
func oneLine(msg string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", " ; ")), " ")
}

// parseReason is why pgx could not parse a connection string, without the string.
func parseReason(err error) string {
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, "`: "); ok && strings.HasPrefix(msg, "cannot parse `") {
		msg = after
	}
	return msg
}

// redact removes from msg every form of the password that connString holds.
func redact(msg, connString string) string {
	var secrets []string
	if u, err := url.Parse(connString); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p, url.QueryEscape(p), url.PathEscape(p))
		}
	}
	// The raw userinfo of a URL that does not parse, and password=... of the
	// key=value form.
	if _, rest, ok := strings.Cut(connString, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, p, ok := strings.Cut(rest[:at], ":"); ok {
				secrets = append(secrets, p)
			}
		}
	}
	for _, f := range strings.Fields(connString) {
		if p, ok := strings.CutPrefix(f, "password="); ok {
			secrets = append(secrets, strings.Trim(p, "'"))
		}
	}
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "xxxxx")
		}
	}
	return msg
}

// Close closes the pool.
func (db *DB) Close() { db.Pool.Close() }

// lost closes every connection of the pool (those in use when they are returned), after
// an operation found its connection broken, silent past its timeout, or to a server no
// longer the primary. They are all to the same server: after a failover, or with a
// server that stopped answering without closing them (a frozen or cut-off host), each
// would otherwise fail its next operation in turn, one operation timeout each. New
// connections go to whichever host accepts writes now. A failure to connect is no
// reason: the pool holds no connection to where it could not connect, and closing
// those being made elsewhere would only start them over.
func (db *DB) lost() { db.Pool.Reset() }

// Schema is the schema the service owns.
func (db *DB) Schema() string { return db.schema }

// Context returns the context of one store operation: the stores' methods take none,
// and a database that does not answer must not hold a request forever.
func (db *DB) Context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), db.timeout)
}

// Ready reports whether the database answers and accepts writes (a standby, reached
// after a failover by a connection string without target_session_attrs=read-write,
// does not). The error is a short reason for /readyz.
func (db *DB) Ready(ctx context.Context) error {
	var standby bool
	if err := db.Pool.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil {
		return fmt.Errorf("the %s store's database does not answer", db.store)
	}
	if standby {
		db.lost()
		return fmt.Errorf("the %s store's database is a read-only standby", db.store)
	}
	return nil
}

// MaxAttempts is how many times InTx runs a transaction that PostgreSQL aborted for a
// concurrent one (serialization_failure, deadlock_detected).
const MaxAttempts = 8

// InTx runs fn in a transaction with opts and commits it, or rolls it back when fn
// returns an error. A transaction aborted for a concurrent one is run again, up to
// MaxAttempts times in all, so fn must do nothing but its work in tx. The error is
// fn's own when it returned one of pkg/errs's kinds, else mapped (Err).
func (db *DB) InTx(ctx context.Context, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginTxFunc(ctx, db.Pool, opts, fn)
		if err == nil {
			return nil
		}
		if attempt >= MaxAttempts || !Retryable(err) {
			if Retryable(err) {
				return db.unavailable(err, "the database aborted the transaction %d times for concurrent ones; retry", attempt)
			}
			return db.Err(err)
		}
		if !RetryPause(ctx, attempt) {
			return db.Err(ctx.Err())
		}
	}
}

// Retryable reports whether err is a transaction PostgreSQL aborted for a concurrent
// one (a serialization failure or a deadlock), which may succeed when run again from
// the start: the errors InTx runs its transaction again for.
func Retryable(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && (pg.Code == "40001" || pg.Code == "40P01")
}

// IsUniqueViolation reports whether err is a unique constraint's violation, for a
// caller that makes it ErrExists.
func IsUniqueViolation(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "23505"
}

// lockID is the advisory lock under which a schema's migrations run, so that replicas
// starting together migrate one at a time.
func lockID(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("umbra migrations " + schema))
	return int64(h.Sum64() &^ (1 << 63))
}
