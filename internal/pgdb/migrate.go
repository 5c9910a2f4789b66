package pgdb

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"go.uber.org/zap"
)

// VersionTable is goose's table of applied migrations, in the service's schema.
const VersionTable = "goose_db_version"

// tablePrivileges are the rights a service's user needs on each of its tables.
var tablePrivileges = []string{"SELECT", "INSERT", "UPDATE", "DELETE"}

// readMigrations returns the versions of the migrations in fsys, in order.
func readMigrations(fsys fs.FS) ([]int64, error) {
	if fsys == nil {
		return nil, errors.New("pgdb: no migrations")
	}
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	var versions []int64
	for _, name := range names {
		v, err := goose.NumericComponent(name)
		if err != nil {
			return nil, fmt.Errorf("pgdb: migration %s: %w", name, err)
		}
		versions = append(versions, v)
	}
	if len(versions) == 0 {
		return nil, errors.New("pgdb: no migrations")
	}
	return versions, nil // fs.Glob sorts, and the names are zero-padded
}

// LatestVersion is the version the migrations in fsys bring a schema to.
func LatestVersion(fsys fs.FS) (int64, error) {
	v, err := readMigrations(fsys)
	if err != nil {
		return 0, err
	}
	return v[len(v)-1], nil
}

// SchemaVersion returns the version of the schema recorded in goose's table, 0 when
// there is none yet.
func (db *DB) SchemaVersion(ctx context.Context) (int64, error) {
	var v int64
	err := db.Pool.QueryRow(ctx, "SELECT coalesce(max(version_id), 0) FROM "+pgx.Identifier{db.schema, VersionTable}.Sanitize()).Scan(&v)
	return v, db.Err(err)
}

// prepare checks what Open promises to check, then migrates.
func (db *DB) prepare(ctx context.Context, cfg Config, pcfg *pgxpool.Config, versions []int64) error {
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		return connectError(err, pcfg)
	}
	// Replicas starting together check and create the schema one at a time, under the
	// lock goose's migrations take too (which goose takes again once this is released).
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockID(db.schema)); err != nil {
		conn.Release()
		return fmt.Errorf("waiting for another replica's migration: %w", err)
	}
	user, err := db.check(ctx, conn.Conn(), versions)
	if _, uerr := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockID(db.schema)); uerr != nil && err == nil {
		err = uerr
	}
	conn.Release()
	if err != nil || user == "" {
		return err
	}
	return db.migrate(ctx, cfg, user)
}

// check refuses a schema from a newer version and a user without the rights, and
// creates the schema when it is missing. It returns the database user when migrations
// are pending, "" when the schema is up to date.
func (db *DB) check(ctx context.Context, conn *pgx.Conn, versions []int64) (user string, err error) {
	latest := versions[len(versions)-1]
	var database string
	var schemaExists bool
	err = conn.QueryRow(ctx, "SELECT current_user, current_database(), EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", db.schema).
		Scan(&user, &database, &schemaExists)
	if err != nil {
		return "", fmt.Errorf("reading the database's state: %w", err)
	}
	schema := ident(db.schema)
	role := ident(user)
	current := int64(0)
	if schemaExists {
		var usage, create bool
		if err := conn.QueryRow(ctx, "SELECT has_schema_privilege($1, 'USAGE'), has_schema_privilege($1, 'CREATE')", db.schema).Scan(&usage, &create); err != nil {
			return "", fmt.Errorf("reading the database user's rights: %w", err)
		}
		if !usage {
			return "", fmt.Errorf("the database user %q lacks the right USAGE on schema %s in database %q: grant it (GRANT USAGE, CREATE ON SCHEMA %s TO %s)", user, db.schema, database, schema, role)
		}
		var hasVersions bool
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", db.schema+"."+VersionTable).Scan(&hasVersions); err != nil {
			return "", fmt.Errorf("reading the schema's version: %w", err)
		}
		if hasVersions {
			err := conn.QueryRow(ctx, "SELECT coalesce(max(version_id), 0) FROM "+pgx.Identifier{db.schema, VersionTable}.Sanitize()).Scan(&current)
			var pg *pgconn.PgError
			if errors.As(err, &pg) && pg.Code == "42501" {
				return "", fmt.Errorf("the database user %q lacks the right SELECT on table %s.%s in database %q: grant it (GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %s TO %s)", user, db.schema, VersionTable, database, schema, role)
			}
			if err != nil {
				return "", fmt.Errorf("reading the schema's version: %w", err)
			}
		}
		if current > latest {
			return "", fmt.Errorf("the schema %s in database %q is at version %d, written by a newer Umbra; this binary knows versions up to %d and refuses to use it (nothing was changed): run the newer Umbra, or restore a backup of the database taken before the upgrade",
				db.schema, database, current, latest)
		}
		missing, err := missingTableRights(ctx, conn, db.schema)
		if err != nil {
			return "", err
		}
		if len(missing) > 0 {
			return "", fmt.Errorf("the database user %q lacks the right%s %s in database %q: grant %s (GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %s TO %s)",
				user, plural(missing), strings.Join(missing, ", "), database, them(missing), schema, role)
		}
		if current < latest && !create {
			return "", fmt.Errorf("the database user %q lacks the right CREATE on schema %s in database %q, which the migration of the schema from version %d to %d needs: grant it (GRANT CREATE ON SCHEMA %s TO %s), or migrate with a user that has it",
				user, db.schema, database, current, latest, schema, role)
		}
	} else {
		var create bool
		if err := conn.QueryRow(ctx, "SELECT has_database_privilege(current_database(), 'CREATE')").Scan(&create); err != nil {
			return "", fmt.Errorf("reading the database user's rights: %w", err)
		}
		if !create {
			return "", fmt.Errorf("the database user %q lacks the right CREATE on database %q, which creating the schema %s needs: grant it (GRANT CREATE ON DATABASE %s TO %s), or create the schema for the user (CREATE SCHEMA %s AUTHORIZATION %s)",
				user, database, db.schema, ident(database), role, schema, role)
		}
	}
	if current == latest {
		return "", nil
	}
	if !schemaExists {
		if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
			return "", fmt.Errorf("creating the schema %s: %w", db.schema, err)
		}
	}
	return user, nil
}

// missingTableRights lists the rights on the tables of schema that the current user
// lacks, as "SELECT on table umbra_x.t".
func missingTableRights(ctx context.Context, conn *pgx.Conn, schema string) ([]string, error) {
	rows, err := conn.Query(ctx, `
		SELECT c.relname, p.priv
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		CROSS JOIN unnest($2::text[]) AS p(priv)
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT has_table_privilege(c.oid, p.priv)
		ORDER BY c.relname, array_position($2::text[], p.priv)`, schema, tablePrivileges)
	if err != nil {
		return nil, fmt.Errorf("reading the database user's rights: %w", err)
	}
	var missing []string
	for rows.Next() {
		var table, priv string
		if err := rows.Scan(&table, &priv); err != nil {
			return nil, err
		}
		missing = append(missing, fmt.Sprintf("%s on table %s.%s", priv, schema, table))
	}
	return missing, rows.Err()
}

// ident is name as SQL writes it: bare when it can be, else quoted.
func ident(name string) string {
	if schemaName.MatchString(name) {
		return name
	}
	return pgx.Identifier{name}.Sanitize()
}

func plural(s []string) string {
	if len(s) > 1 {
		return "s"
	}
	return ""
}

func them(s []string) string {
	if len(s) > 1 {
		return "them"
	}
	return "it"
}

// migrate applies the pending migrations with goose, under an advisory lock of the
// schema's, so that replicas starting together migrate one at a time.
func (db *DB) migrate(ctx context.Context, cfg Config, user string) error {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID(db.schema)), lock.WithLockTimeout(1, 300))
	if err != nil {
		return err
	}
	sqlDB := stdlib.OpenDBFromPool(db.Pool)
	defer sqlDB.Close()
	provider, err := goose.NewProvider(goose.DialectPostgres, sqlDB, cfg.Migrations,
		goose.WithTableName(db.schema+"."+VersionTable),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
		goose.WithLogger(goose.NopLogger()))
	if err != nil {
		return err
	}
	results, err := provider.Up(ctx)
	for _, r := range results {
		cfg.Log.Info("schema migrated", zap.String("schema", db.schema), zap.Int64("version", r.Source.Version), zap.Duration("took", r.Duration))
	}
	if err != nil {
		var pg *pgconn.PgError
		if errors.As(err, &pg) && pg.Code == "42501" {
			return fmt.Errorf("the database user %q lacks a right the migration of schema %s needs: %s (run the migration as the schema's owner, or grant the right)", user, db.schema, pg.Message)
		}
		return fmt.Errorf("migrating the schema %s: %w", db.schema, err)
	}
	return nil
}

// connectError says why the first connection failed, naming the server, the user and
// the database, never the password.
func connectError(err error, pcfg *pgxpool.Config) error {
	c := pcfg.ConnConfig
	hosts := []string{net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))}
	for _, f := range c.Fallbacks { // sslmode=prefer tries each host twice: with TLS, without
		if h := net.JoinHostPort(f.Host, strconv.Itoa(int(f.Port))); !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	at := strings.Join(hosts, ", ")
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch pg.Code {
		case "28P01", "28000":
			return fmt.Errorf("PostgreSQL at %s refused the user %q: %s (check the user and the password of the connection string)", at, c.User, pg.Message)
		case "3D000":
			return fmt.Errorf("PostgreSQL at %s has no database %q: create it (CREATE DATABASE %s) or name another in the connection string", at, c.Database, ident(c.Database))
		}
		return fmt.Errorf("PostgreSQL at %s refused the connection of user %q to database %q: %s (SQLSTATE %s)", at, c.User, c.Database, pg.Message, pg.Code)
	}
	reason := err.Error()
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) && errors.Unwrap(ce) != nil {
		reason = errors.Unwrap(ce).Error()
	}
	// Several attempts give a line each; the same failure is said once.
	var lines []string
	for _, l := range strings.Split(reason, "\n") {
		if l = strings.TrimSpace(l); l != "" && !slices.Contains(lines, l) {
			lines = append(lines, l)
		}
	}
	reason = strings.Join(lines, "; ")
	return fmt.Errorf("cannot reach PostgreSQL at %s (user %q, database %q): %s", at, c.User, c.Database, reason)
}
