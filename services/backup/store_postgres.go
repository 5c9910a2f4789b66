package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	backupstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/backup/v1"
)

// Schema is the PostgreSQL schema the backup service owns.
const Schema = "umbra_backup"

// DefaultOutboxLease is how long a replica delivers the outbox alone after its last
// read or delete of it; a replica that stops without letting go holds it back that
// long at most.
const DefaultOutboxLease = time.Minute

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the backup service's goose migrations, embedded.
func Migrations() fs.FS { return pgdb.MigrationsIn(migrationFiles) }

// PostgresStore is the Store in PostgreSQL: the tables of migrations/ in the schema
// Schema, shared by every replica of the service. Each row holds the record the bbolt
// engine stores, as protobuf bytes, beside the columns it is looked up by
// (docs/storage-postgres.md).
type PostgresStore struct {
	db *pgdb.DB
	// holder names this store in outbox_delivery while it delivers the outbox.
	holder string
	// lease is how long a claim of the outbox lasts (DefaultOutboxLease).
	lease time.Duration
}

var _ Store = (*PostgresStore)(nil)

// records are the store's rows' records, named in errors.
var records = pgdb.Records{Store: "backup", Schema: Schema}

// OpenPostgresStore connects to the database at url, and migrates the schema (see
// pgdb.Open for what it checks first).
func OpenPostgresStore(ctx context.Context, url string, log *zap.Logger) (*PostgresStore, error) {
	db, err := pgdb.Open(ctx, pgdb.Config{URL: url, Store: "backup", Schema: Schema, Migrations: Migrations(), Log: log})
	if err != nil {
		return nil, err
	}
	return &PostgresStore{db: db, holder: rand.Text(), lease: DefaultOutboxLease}, nil
}

// Close lets go of the outbox if this store was delivering it, so that another replica
// takes over at once, and closes the connection pool.
func (s *PostgresStore) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// Best effort: unreleased, the lease runs out by itself.
	s.db.Pool.Exec(ctx, "UPDATE outbox_delivery SET holder = NULL, until = NULL WHERE holder = $1", s.holder)
	s.db.Close()
	return nil
}

// DB is the connection pool, for the node's readiness check.
func (s *PostgresStore) DB() *pgdb.DB { return s.db }

// decode reads a record; one that does not parse is damaged data, named for the log.
func decode(table, key string, b []byte, m proto.Message) error {
	if err := proto.Unmarshal(b, m); err != nil {
		return errs.Damagedf("backup store: %s.%s row %s does not parse: %v", Schema, table, key, err)
	}
	return nil
}

const secretCheckName = "secret_check"

func (s *PostgresStore) SecretCheck(candidate []byte) ([]byte, error) {
	var out []byte
	err := s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		for range 2 {
			switch err := tx.QueryRow(ctx, "SELECT value FROM server_state WHERE name = $1", secretCheckName).Scan(&out); {
			case err == nil:
				return nil
			case !errors.Is(err, pgx.ErrNoRows):
				return err
			}
			if len(candidate) == 0 {
				return errNoSecretHere
			}
			// Replicas starting together each offer their value; the first stored is
			// everyone's, and the others read it on the next turn.
			tag, err := tx.Exec(ctx, "INSERT INTO server_state (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING", secretCheckName, candidate)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				out = bytes.Clone(candidate)
				return nil
			}
		}
		return errors.New("backup store: the secret check value was neither stored nor found")
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// slotKeyText names a slot's row in messages.
func slotKeyText(appID, identity string, slot uint32) string {
	return fmt.Sprintf("%q", fmt.Sprintf("%s/%s/%d", appID, identity, slot))
}

// freshSlot is the record of a slot never written.
func freshSlot(appID, identity string, slot uint32) *backupstoragev1.BackupSlotRecord {
	return &backupstoragev1.BackupSlotRecord{AppId: appID, Identity: identity, Slot: slot}
}

// readSlot reads a slot's record into rec; lock is appended to the query
// ("FOR UPDATE"). found is false when the slot has no row.
func readSlot(ctx context.Context, tx pgx.Tx, appID, identity string, slot uint32, lock string, rec *backupstoragev1.BackupSlotRecord) (found bool, err error) {
	b, found, err := pgdb.GetBytes(ctx, tx, "SELECT record FROM slots WHERE app_id = $1 AND identity = $2 AND slot = $3 "+lock, appID, identity, int64(slot))
	if err != nil || !found {
		return false, err
	}
	if err := decode("slots", slotKeyText(appID, identity, slot), b, rec); err != nil {
		return false, err
	}
	if rec.GetAppId() != appID || rec.GetIdentity() != identity || rec.GetSlot() != slot {
		return false, errs.Damagedf("backup store: %s.slots row %s names %s/%s/%d", Schema, slotKeyText(appID, identity, slot), rec.GetAppId(), rec.GetIdentity(), rec.GetSlot())
	}
	return true, nil
}

func (s *PostgresStore) Slot(appID, identity string, slot uint32) (*backupstoragev1.BackupSlotRecord, error) {
	return pgdb.ViewValue(s.db, func(ctx context.Context, tx pgx.Tx) (*backupstoragev1.BackupSlotRecord, error) {
		out := &backupstoragev1.BackupSlotRecord{}
		found, err := readSlot(ctx, tx, appID, identity, slot, "", out)
		if err == nil && !found {
			out = freshSlot(appID, identity, slot)
		}
		return out, err
	})
}

func (s *PostgresStore) Slots(appID, identity string) ([]*backupstoragev1.BackupSlotRecord, error) {
	return pgdb.ViewValue(s.db, func(ctx context.Context, tx pgx.Tx) ([]*backupstoragev1.BackupSlotRecord, error) {
		rows, err := tx.Query(ctx, "SELECT slot, record FROM slots WHERE app_id = $1 AND identity = $2 ORDER BY slot", appID, identity)
		if err != nil {
			return nil, err
		}
		return pgdb.ScanWith(rows, func() *backupstoragev1.BackupSlotRecord { return &backupstoragev1.BackupSlotRecord{} },
			func(slot int64, b []byte, rec *backupstoragev1.BackupSlotRecord) error {
				return decode("slots", slotKeyText(appID, identity, uint32(slot)), b, rec)
			})
	})
}

// errNothingWritten rolls back an UpdateSlot transaction whose update wrote nothing,
// and the fresh row it may have inserted with it.
var errNothingWritten = errors.New("backup store: nothing to write")

// lockSlot reads a slot's record FOR UPDATE, so that the transaction holds the slot
// until it ends. A slot never written gets a row with a fresh record first (which the
// caller removes, or rolls back, when it writes nothing): a missing row cannot be
// locked, and two replicas updating a new slot at once must take turns all the same.
// fresh reports that row.
func lockSlot(ctx context.Context, tx pgx.Tx, appID, identity string, slot uint32) (rec *backupstoragev1.BackupSlotRecord, fresh bool, err error) {
	for range 2 {
		rec = &backupstoragev1.BackupSlotRecord{}
		found, err := readSlot(ctx, tx, appID, identity, slot, "FOR UPDATE", rec)
		if err != nil || found {
			return rec, false, err
		}
		rec = freshSlot(appID, identity, slot)
		b, err := records.Encode(rec)
		if err != nil {
			return nil, false, err
		}
		// Of two inserts at once the second waits for the first's transaction: after
		// it committed, this inserts nothing and the next turn reads (and locks) its
		// row; after it rolled back, this one's row is in.
		tag, err := tx.Exec(ctx, "INSERT INTO slots (app_id, identity, slot, record) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", appID, identity, int64(slot), b)
		if err != nil {
			return nil, false, err
		}
		if tag.RowsAffected() == 1 {
			return rec, true, nil
		}
	}
	return nil, false, fmt.Errorf("backup store: the row of slot %s was neither inserted nor found", slotKeyText(appID, identity, slot))
}

func (s *PostgresStore) UpdateSlot(appID, identity string, slot uint32, update SlotUpdate) (*backupstoragev1.BackupSlotRecord, error) {
	var (
		out    *backupstoragev1.BackupSlotRecord
		answer error
	)
	err := s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		out, answer = nil, nil
		rec, fresh, err := lockSlot(ctx, tx, appID, identity, slot)
		if err != nil {
			return err
		}
		change, answerErr := update(rec)
		out, answer = rec, answerErr
		switch {
		case !change.Write && change.Event == nil:
			return errNothingWritten
		case change.Write:
			if rec.GetAppId() != appID || rec.GetIdentity() != identity || rec.GetSlot() != slot {
				return fmt.Errorf("backup store: slot update moved the record to %s/%s/%d", rec.GetAppId(), rec.GetIdentity(), rec.GetSlot())
			}
			b, err := records.Encode(rec)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "UPDATE slots SET record = $4 WHERE app_id = $1 AND identity = $2 AND slot = $3", appID, identity, int64(slot), b); err != nil {
				return err
			}
		case fresh:
			// An event without the slot: a slot never written stays without a row.
			if _, err := tx.Exec(ctx, "DELETE FROM slots WHERE app_id = $1 AND identity = $2 AND slot = $3", appID, identity, int64(slot)); err != nil {
				return err
			}
		}
		if ev := change.Event; ev != nil {
			// The sequence orders the outbox; it need not be gap-free (a delivery
			// reads whatever is pending), and events of one slot get theirs in the
			// order of the slot's updates, which hold its row.
			var seq int64
			if err := tx.QueryRow(ctx, "SELECT nextval('outbox_sequence')").Scan(&seq); err != nil {
				return err
			}
			ev.Sequence = uint64(seq)
			b, err := records.Encode(ev)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "INSERT INTO outbox (sequence, record) VALUES ($1, $2)", seq, b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errNothingWritten) {
		return nil, err
	}
	return out, answer
}

// pendingOutbox reads up to limit events, oldest first.
func pendingOutbox(ctx context.Context, tx pgx.Tx, limit int) ([]*backupstoragev1.BackupOutboxRecord, error) {
	rows, err := tx.Query(ctx, "SELECT sequence, record FROM outbox ORDER BY sequence LIMIT $1", limit)
	if err != nil {
		return nil, err
	}
	return pgdb.ScanWith(rows, func() *backupstoragev1.BackupOutboxRecord { return &backupstoragev1.BackupOutboxRecord{} },
		func(seq int64, b []byte, rec *backupstoragev1.BackupOutboxRecord) error {
			return decode("outbox", fmt.Sprint(seq), b, rec)
		})
}

func (s *PostgresStore) Outbox(limit int) ([]*backupstoragev1.BackupOutboxRecord, error) {
	if limit <= 0 {
		return nil, nil
	}
	return pgdb.ViewValue(s.db, func(ctx context.Context, tx pgx.Tx) ([]*backupstoragev1.BackupOutboxRecord, error) {
		return pendingOutbox(ctx, tx, limit)
	})
}

// ClaimOutbox hands the pending events to one replica at a time: the holder of
// outbox_delivery's lease, which this call takes when it is free or has run out, and
// renews when this store holds it. Another replica's claim gets nothing meanwhile, so
// each event is published by one replica, and the outbox goes out oldest first, as
// with one process. A claim that finds the outbox empty lets go, so that the replica
// whose update writes the next event delivers it at once.
//
// The lease is the database's time, not a process's. A holder that stops without
// letting go (killed) holds the others back until the lease runs out; a holder that
// stalls longer than the lease between its claim and its delete may see its event
// published again by the next holder, which PublishEvent's idempotency on the event
// id makes a duplicate the messaging service recognises: no worse than a crash of
// the bbolt engine's one process between the publish and the delete.
func (s *PostgresStore) ClaimOutbox(limit int) ([]*backupstoragev1.BackupOutboxRecord, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []*backupstoragev1.BackupOutboxRecord
	err := s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		out = nil
		// The lease row's lock orders the claims: a claim that reads the outbox
		// empty lets go in the same transaction, so a claim waiting behind it
		// either finds the lease free or was made before it and leaves the holder
		// to find its event.
		var mine, free bool
		err := tx.QueryRow(ctx, `SELECT holder IS NOT DISTINCT FROM $1, holder IS NULL OR until < clock_timestamp()
			FROM outbox_delivery FOR UPDATE`, s.holder).Scan(&mine, &free)
		if err != nil {
			return err
		}
		if !mine && !free {
			return nil // another replica delivers
		}
		if out, err = pendingOutbox(ctx, tx, limit); err != nil {
			return err
		}
		if len(out) == 0 {
			_, err = tx.Exec(ctx, "UPDATE outbox_delivery SET holder = NULL, until = NULL")
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE outbox_delivery SET holder = $1, until = clock_timestamp() + $2::interval", s.holder, s.lease)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteOutbox removes a delivered event, and renews the lease when this store holds
// it: a holder that goes on delivering keeps it.
func (s *PostgresStore) DeleteOutbox(sequence uint64) error {
	return s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM outbox WHERE sequence = $1", int64(sequence)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE outbox_delivery SET until = clock_timestamp() + $2::interval WHERE holder = $1", s.holder, s.lease)
		return err
	})
}
