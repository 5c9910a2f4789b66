package card

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The key transparency log's keys in PostgreSQL. The log's first key stays in
// kt_log_key; the keys that rotations add are in kt_log_keys
// (migrations/00002_kt_log_keys.sql). A rotation holds kt_log_state's row lock, as an
// append does, so that no append signs with a key set that a rotation is changing.

func (s *PostgresStore) LogKey(candidate *cardstoragev1.LogKeyRecord) (*cardstoragev1.LogKeyRecord, error) {
	return pgdb.UpdateValue(s.db, func(ctx context.Context, tx pgx.Tx) (*cardstoragev1.LogKeyRecord, error) {
		return pgFirstKey(candidate, "log key",
			func() (*cardstoragev1.LogKeyRecord, bool, error) {
				key := &cardstoragev1.LogKeyRecord{}
				found, err := records.Get(ctx, tx, "kt_log_key", "current", key, "SELECT record FROM kt_log_key")
				return key, found, err
			},
			func(b []byte) (pgconn.CommandTag, error) {
				return tx.Exec(ctx, "INSERT INTO kt_log_key (one, record) VALUES (true, $1) ON CONFLICT DO NOTHING", b)
			},
			errors.New("card: the log key was refused, and there is none"))
	})
}

func (s *PostgresStore) LogKeys() ([]*cardstoragev1.LogKeyRecord, error) {
	out, err := pgdb.ViewValue(s.db, pgLogKeys)
	if err == nil && len(out) == 0 {
		err = noLogKey()
	}
	return out, err
}

// pgLogKeys reads every log key, oldest first; none before the first.
func pgLogKeys(ctx context.Context, tx pgx.Tx) ([]*cardstoragev1.LogKeyRecord, error) {
	first := &cardstoragev1.LogKeyRecord{}
	found, err := records.Get(ctx, tx, "kt_log_key", "current", first, "SELECT record FROM kt_log_key")
	if err != nil || !found {
		return nil, err
	}
	rows, err := tx.Query(ctx, "SELECT key_id, record FROM kt_log_keys")
	if err != nil {
		return nil, err
	}
	added, err := pgdb.Scan[string](records, rows, "kt_log_keys", func() *cardstoragev1.LogKeyRecord { return &cardstoragev1.LogKeyRecord{} })
	if err != nil {
		return nil, err
	}
	return logKeysInOrder(first, added), nil
}

// lockLogState takes kt_log_state's row lock, which appends hold too.
func lockLogState(ctx context.Context, tx pgx.Tx) error {
	var size int64
	return tx.QueryRow(ctx, "SELECT size FROM kt_log_state FOR UPDATE").Scan(&size)
}

func (s *PostgresStore) AddLogKey(next *cardstoragev1.LogKeyRecord, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, error) {
	return addLogKeyWith(s.updateLogKeys, next, sign)
}

func (s *PostgresStore) RetireLogKey(keyID string, at time.Time, sign CheckpointSigner) (*cardstoragev1.LogKeyRecord, *cardstoragev1.CheckpointRecord, error) {
	return retireLogKeyWith(s.updateLogKeys, keyID, at, sign)
}

// updateLogKeys is the store's updateLogKeys: a transaction that holds kt_log_state's
// lock first, as appends do.
func (s *PostgresStore) updateLogKeys(f func(logKeyTx) error) error {
	return s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		if err := lockLogState(ctx, tx); err != nil {
			return err
		}
		return f(pgLogKeyTx{ctx, tx})
	})
}

// pgLogKeyTx is a PostgreSQL transaction that holds kt_log_state's lock, as the log
// key rotations use it.
type pgLogKeyTx struct {
	ctx context.Context
	tx  pgx.Tx
}

var _ logKeyTx = pgLogKeyTx{}

func (t pgLogKeyTx) logKeys() ([]*cardstoragev1.LogKeyRecord, error) { return pgLogKeys(t.ctx, t.tx) }

func (t pgLogKeyTx) insertLogKey(next *cardstoragev1.LogKeyRecord) error {
	b, err := records.Encode(next)
	if err != nil {
		return err
	}
	_, err = t.tx.Exec(t.ctx, "INSERT INTO kt_log_keys (key_id, record) VALUES ($1, $2)", next.GetKeyId(), b)
	return err
}

func (t pgLogKeyTx) updateLogKey(rec *cardstoragev1.LogKeyRecord, first bool) error {
	b, err := records.Encode(rec)
	if err != nil {
		return err
	}
	if first {
		_, err = t.tx.Exec(t.ctx, "UPDATE kt_log_key SET record = $1", b)
	} else {
		_, err = t.tx.Exec(t.ctx, "UPDATE kt_log_keys SET record = $2 WHERE key_id = $1", rec.GetKeyId(), b)
	}
	return err
}

func (t pgLogKeyTx) latest() (*cardstoragev1.CheckpointRecord, error) {
	return newPgKT(t.ctx, t.tx).latest()
}

func (t pgLogKeyTx) replaceCheckpoint(rec *cardstoragev1.CheckpointRecord) error {
	b, err := records.Encode(rec)
	if err != nil {
		return err
	}
	_, err = t.tx.Exec(t.ctx, "UPDATE kt_checkpoints SET record = $2 WHERE size = $1", int64(rec.GetSize()), b)
	return err
}
