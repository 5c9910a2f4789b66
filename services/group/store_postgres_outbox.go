// The PostgreSQL engine's outbox, claimed by one replica at a time, and the card follower's cursor.

package group

import (
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// ClaimOutbox returns up to limit outbox records, oldest first, unless another replica
// holds the claim on the outbox: then none. It claims the outbox for OutboxClaim while
// there are records, and gives the claim up once there are none; the check and the
// release are one transaction, so a record written meanwhile is seen by this replica's
// read or by the other replica's claim.
func (s *PostgresStore) ClaimOutbox(limit int) ([]*storagev1.GroupOutboxRecord, error) {
	var out []*storagev1.GroupOutboxRecord
	ctx, cancel := s.db.Context()
	defer cancel()
	err := s.db.InTx(ctx, pgx.TxOptions{}, func(ptx pgx.Tx) error {
		tx := boundedTx{ptx}
		out = nil
		var holder *string
		var live bool
		if err := tx.QueryRow(ctx, "SELECT holder, coalesce(until > now(), false) FROM outbox_claim FOR UPDATE").Scan(&holder, &live); err != nil {
			return err
		}
		if holder != nil && *holder != s.holder && live {
			return nil // another replica delivers
		}
		var err error
		if out, err = (&pgTx{ctx: ctx, tx: tx}).Outbox(limit); err != nil {
			return err
		}
		if len(out) == 0 {
			_, err = tx.Exec(ctx, "UPDATE outbox_claim SET holder = NULL, until = NULL")
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE outbox_claim SET holder = $1, until = now() + $2 * interval '1 millisecond'", s.holder, OutboxClaim.Milliseconds())
		return err
	})
	return out, err
}

func (t *pgTx) AppendOutbox(r *storagev1.GroupOutboxRecord) error {
	if err := t.writing(); err != nil {
		return err
	}
	// The sequence is the column's: the record is stored without it.
	rec := proto.Clone(r).(*storagev1.GroupOutboxRecord)
	rec.Sequence = 0
	b, err := records.Encode(rec)
	if err != nil {
		return err
	}
	var seq int64
	if err := t.tx.QueryRow(t.ctx, "INSERT INTO outbox (record) VALUES ($1) RETURNING sequence", b).Scan(&seq); err != nil {
		return err
	}
	r.Sequence = uint64(seq)
	t.wroteEvents = true
	return nil
}

func (t *pgTx) Outbox(limit int) ([]*storagev1.GroupOutboxRecord, error) {
	rows, err := t.tx.Query(t.ctx, "SELECT sequence, record FROM outbox ORDER BY sequence LIMIT $1", limit)
	if err != nil {
		return nil, err
	}
	return pgdb.ScanWith(rows, func() *storagev1.GroupOutboxRecord { return &storagev1.GroupOutboxRecord{} }, func(seq int64, b []byte, r *storagev1.GroupOutboxRecord) error {
		if err := pgDecode("outbox", seq, b, r); err != nil {
			return err
		}
		r.Sequence = uint64(seq)
		return nil
	})
}

func (t *pgTx) DeleteOutbox(seq uint64) error {
	if err := t.writing(); err != nil {
		return err
	}
	s, err := pgInt("outbox sequence", seq)
	if err != nil {
		return nil // no record has it
	}
	_, err = t.tx.Exec(t.ctx, "DELETE FROM outbox WHERE sequence = $1", s)
	return err
}

// CardCursor, in a write transaction, locks the cursor until the transaction ends: of
// two followers applying the same page, the second reads the cursor the first moved
// (and so applies nothing).
func (t *pgTx) CardCursor() (uint64, error) {
	query := "SELECT sequence FROM card_cursor"
	if t.w != nil {
		if t.wouldWait {
			return 0, errWouldWait
		}
		query += " FOR UPDATE"
	}
	var seq int64
	if err := t.tx.QueryRow(t.ctx, query).Scan(&seq); err != nil {
		return 0, err
	}
	return uint64(seq), nil
}

func (t *pgTx) SetCardCursor(seq uint64) error {
	if err := t.writing(); err != nil {
		return err
	}
	s, err := pgInt("card cursor", seq)
	if err != nil {
		return err
	}
	_, err = t.tx.Exec(t.ctx, "UPDATE card_cursor SET sequence = $1", s)
	return err
}
