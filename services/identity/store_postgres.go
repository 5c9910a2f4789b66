package identity

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	identitystoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/identity/v1"
)

// Schema is the PostgreSQL schema the identity service owns.
const Schema = "umbra_identity"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the identity service's goose migrations, embedded.
func Migrations() fs.FS { return pgdb.MigrationsIn(migrationFiles) }

// PostgresStore is the Store in PostgreSQL: the tables of migrations/ in the schema
// Schema. Each row holds the record the bbolt engine stores, as protobuf bytes, beside
// the columns it is looked up by (docs/storage-postgres.md).
type PostgresStore struct {
	db *pgdb.DB
}

var _ Store = (*PostgresStore)(nil)

// records are the store's rows' records, named in errors.
var records = pgdb.Records{Store: "identity", Schema: Schema}

// OpenPostgresStore connects to the database at url, and migrates the schema (see
// pgdb.Open for what it checks first).
func OpenPostgresStore(ctx context.Context, url string, log *zap.Logger) (*PostgresStore, error) {
	db, err := pgdb.Open(ctx, pgdb.Config{URL: url, Store: "identity", Schema: Schema, Migrations: Migrations(), Log: log})
	if err != nil {
		return nil, err
	}
	return &PostgresStore{db: db}, nil
}

// Close closes the connection pool.
func (s *PostgresStore) Close() error { s.db.Close(); return nil }

// DB is the connection pool, for the node's readiness check.
func (s *PostgresStore) DB() *pgdb.DB { return s.db }

// getExisting is records.Get for a row that must be there: errs.ErrNotFound when it is not.
func getExisting(ctx context.Context, tx pgx.Tx, table, key string, m proto.Message, query string, args ...any) error {
	found, err := records.Get(ctx, tx, table, key, m, query, args...)
	if err == nil && !found {
		return errs.ErrNotFound
	}
	return err
}

func (s *PostgresStore) CreateApp(app *identitystoragev1.AppRecord, key *identitystoragev1.AppKeyRecord) error {
	rec, err := records.Encode(app)
	if err != nil {
		return err
	}
	return s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "INSERT INTO apps (app_id, record) VALUES ($1, $2) ON CONFLICT DO NOTHING", app.GetAppId(), rec)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errs.Existsf("app %s already exists", app.GetAppId())
		}
		return insertAppKey(ctx, tx, key)
	})
}

func insertAppKey(ctx context.Context, tx pgx.Tx, key *identitystoragev1.AppKeyRecord) error {
	rec, err := records.Encode(key)
	if err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, "INSERT INTO app_keys (key_id, app_id, record) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", key.GetKeyId(), key.GetAppId(), rec)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return errs.Existsf("app key %s already exists", key.GetKeyId())
	}
	return nil
}

func (s *PostgresStore) App(appID string) (*identitystoragev1.AppRecord, []*identitystoragev1.AppKeyRecord, error) {
	app := &identitystoragev1.AppRecord{}
	var keys []*identitystoragev1.AppKeyRecord
	err := s.db.View(func(ctx context.Context, tx pgx.Tx) error {
		keys = nil
		found, err := records.Get(ctx, tx, "apps", appID, app, "SELECT record FROM apps WHERE app_id = $1", appID)
		if err != nil {
			return err
		}
		if !found {
			return errs.NotFoundf("app %s not found", appID)
		}
		rows, err := tx.Query(ctx, "SELECT key_id, record FROM app_keys WHERE app_id = $1 ORDER BY key_id", appID)
		if err != nil {
			return err
		}
		keys, err = pgdb.Scan[string](records, rows, "app_keys", func() *identitystoragev1.AppKeyRecord { return &identitystoragev1.AppKeyRecord{} })
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return app, keys, nil
}

func (s *PostgresStore) AddAppKey(key *identitystoragev1.AppKeyRecord) error {
	return s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		// FOR SHARE: the app stays as it is until the key is in.
		var one int
		switch err := tx.QueryRow(ctx, "SELECT 1 FROM apps WHERE app_id = $1 FOR SHARE", key.GetAppId()).Scan(&one); {
		case errors.Is(err, pgx.ErrNoRows):
			return errs.NotFoundf("app %s not found", key.GetAppId())
		case err != nil:
			return err
		}
		return insertAppKey(ctx, tx, key)
	})
}

func (s *PostgresStore) RevokeAppKey(appID, keyID string, at time.Time) (*identitystoragev1.AppKeyRecord, error) {
	var key *identitystoragev1.AppKeyRecord
	err := s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		key = &identitystoragev1.AppKeyRecord{}
		// FOR UPDATE: of two revocations, the second reads what the first wrote.
		found, err := records.Get(ctx, tx, "app_keys", keyID, key, "SELECT record FROM app_keys WHERE key_id = $1 FOR UPDATE", keyID)
		if err != nil {
			return err
		}
		if !found || key.GetAppId() != appID {
			return errs.NotFoundf("app %s has no key %s", appID, keyID)
		}
		if key.GetRevokedAt() != nil {
			return nil
		}
		key.RevokedAt = timestamppb.New(at)
		rec, err := records.Encode(key)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE app_keys SET record = $2 WHERE key_id = $1", keyID, rec)
		return err
	})
	if err != nil {
		return nil, err
	}
	return key, nil
}

func (s *PostgresStore) AppKey(keyID string) (*identitystoragev1.AppKeyRecord, error) {
	return pgdb.ViewValue(s.db, func(ctx context.Context, tx pgx.Tx) (*identitystoragev1.AppKeyRecord, error) {
		key := &identitystoragev1.AppKeyRecord{}
		return key, getExisting(ctx, tx, "app_keys", keyID, key, "SELECT record FROM app_keys WHERE key_id = $1", keyID)
	})
}

func (s *PostgresStore) SigningKeys() ([]*identitystoragev1.SigningKeyRecord, error) {
	return pgdb.ViewValue(s.db, func(ctx context.Context, tx pgx.Tx) ([]*identitystoragev1.SigningKeyRecord, error) {
		return pgSigningKeys(ctx, tx, "")
	})
}

// pgSigningKeys reads every signing key, in key id order; lock is appended to the
// query ("FOR UPDATE").
func pgSigningKeys(ctx context.Context, tx pgx.Tx, lock string) ([]*identitystoragev1.SigningKeyRecord, error) {
	rows, err := tx.Query(ctx, "SELECT key_id, record FROM signing_keys ORDER BY key_id "+lock)
	if err != nil {
		return nil, err
	}
	return pgdb.Scan[string](records, rows, "signing_keys", func() *identitystoragev1.SigningKeyRecord { return &identitystoragev1.SigningKeyRecord{} })
}

func (s *PostgresStore) AddSigningKey(key *identitystoragev1.SigningKeyRecord, verifyUntil time.Time, onlyIfNone bool) (bool, error) {
	var added bool
	err := s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		added = false
		// Replicas starting together each offer a first key (onlyIfNone), and a
		// rotation retires the active key: writers take turns, so that there is always
		// exactly one active key. EXCLUSIVE lets readers (token checks) go on.
		if _, err := tx.Exec(ctx, "LOCK TABLE signing_keys IN EXCLUSIVE MODE"); err != nil {
			return err
		}
		keys, err := pgSigningKeys(ctx, tx, "")
		if err != nil {
			return err
		}
		add, err := rotateSigningKeys(keys, key.GetCreatedAt(), verifyUntil, onlyIfNone,
			func(old *identitystoragev1.SigningKeyRecord) error {
				rec, err := records.Encode(old)
				if err != nil {
					return err
				}
				_, err = tx.Exec(ctx, "UPDATE signing_keys SET record = $2 WHERE key_id = $1", old.GetKeyId(), rec)
				return err
			},
			func(keyID string) error {
				_, err := tx.Exec(ctx, "DELETE FROM signing_keys WHERE key_id = $1", keyID)
				return err
			})
		if err != nil || !add {
			return err
		}
		rec, err := records.Encode(key)
		if err != nil {
			return err
		}
		// A key id of a key kept above is replaced, as the bbolt engine's Put does.
		if _, err := tx.Exec(ctx, "INSERT INTO signing_keys (key_id, record) VALUES ($1, $2) ON CONFLICT (key_id) DO UPDATE SET record = EXCLUDED.record", key.GetKeyId(), rec); err != nil {
			return err
		}
		added = true
		return nil
	})
	return added, err
}

func (s *PostgresStore) Revoke(appID, identity string, before time.Time) (*identitystoragev1.RevocationRecord, error) {
	var rec *identitystoragev1.RevocationRecord
	err := s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		// The sequence row's lock first: revocations take turns, so each reads the one
		// before it and sequences follow commit order (migrations/00001_identity.sql).
		var last int64
		if err := tx.QueryRow(ctx, "SELECT last FROM revocation_sequence FOR UPDATE").Scan(&last); err != nil {
			return err
		}
		rec = &identitystoragev1.RevocationRecord{}
		key := appID + "/" + identity
		found, err := records.Get(ctx, tx, "revocations", key, rec, "SELECT record FROM revocations WHERE app_id = $1 AND identity = $2", appID, identity)
		if err != nil {
			return err
		}
		if found && !before.After(rec.GetBefore().AsTime()) {
			return nil // an equal or later revocation is already in force
		}
		seq := last + 1
		if _, err := tx.Exec(ctx, "UPDATE revocation_sequence SET last = $1", seq); err != nil {
			return err
		}
		rec = &identitystoragev1.RevocationRecord{Sequence: uint64(seq), AppId: appID, Identity: identity, Before: timestamppb.New(before)}
		b, err := records.Encode(rec)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO revocations (app_id, identity, sequence, record) VALUES ($1, $2, $3, $4)
			ON CONFLICT (app_id, identity) DO UPDATE SET sequence = EXCLUDED.sequence, record = EXCLUDED.record`,
			appID, identity, seq, b)
		return err
	})
	if err != nil {
		return nil, err
	}
	return rec, nil
}

func (s *PostgresStore) Revocation(appID, identity string) (*identitystoragev1.RevocationRecord, error) {
	return pgdb.ViewValue(s.db, func(ctx context.Context, tx pgx.Tx) (*identitystoragev1.RevocationRecord, error) {
		rec := &identitystoragev1.RevocationRecord{}
		return rec, getExisting(ctx, tx, "revocations", appID+"/"+identity, rec, "SELECT record FROM revocations WHERE app_id = $1 AND identity = $2", appID, identity)
	})
}

func (s *PostgresStore) Revocations(after uint64, limit int) ([]*identitystoragev1.RevocationRecord, uint64, error) {
	var out []*identitystoragev1.RevocationRecord
	var latest int64
	err := s.db.View(func(ctx context.Context, tx pgx.Tx) error {
		out = nil
		// One snapshot: the latest sequence and the records agree.
		if err := tx.QueryRow(ctx, "SELECT last FROM revocation_sequence").Scan(&latest); err != nil {
			return err
		}
		if after >= uint64(latest) || limit <= 0 {
			return nil
		}
		rows, err := tx.Query(ctx, "SELECT sequence, record FROM revocations WHERE sequence > $1 ORDER BY sequence LIMIT $2", int64(after), limit)
		if err != nil {
			return err
		}
		out, err = pgdb.Scan[int64](records, rows, "revocations", func() *identitystoragev1.RevocationRecord { return &identitystoragev1.RevocationRecord{} })
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return out, uint64(latest), nil
}
