// The PostgreSQL engine's epochs, membership statements, epoch keys, uploads and rotation schedule.

package group

import (
	"time"

	"github.com/jackc/pgx/v5"

	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

func (t *pgTx) Epoch(app, group string, epoch uint64) (*storagev1.GroupEpochRecord, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	e, err := pgInt("epoch", epoch)
	if err != nil {
		return nil, nil // no stored epoch is that high
	}
	return getOne(t, "epochs", epoch, &storagev1.GroupEpochRecord{},
		"SELECT record FROM epochs WHERE app_id = $1 AND group_id = $2 AND epoch = $3", app, group, e)
}

func (t *pgTx) PutEpoch(app, group string, e *storagev1.GroupEpochRecord) error {
	epoch, err := pgInt("epoch", e.GetEpoch())
	if err != nil {
		return err
	}
	return t.putGroupRow("epochs", "epoch", app, group, epoch, e)
}

func (t *pgTx) PutStatement(app, group string, r *storagev1.GroupStatementRecord) error {
	seq, err := pgInt("statement sequence", r.GetSequence())
	if err != nil {
		return err
	}
	return t.putGroupRow("statements", "sequence", app, group, seq, r)
}

func (t *pgTx) Statements(app, group string, after uint64, fn func(*storagev1.GroupStatementRecord) (bool, error)) error {
	if err := t.lock(app, group); err != nil {
		return err
	}
	from, err := pgInt("statement sequence", after)
	if err != nil {
		return nil // none is above
	}
	return scanPages(t, "statements", `SELECT sequence, record FROM statements WHERE app_id = $1 AND group_id = $2 AND sequence > $3
		ORDER BY sequence LIMIT $4`, []any{app, group}, from, func() *storagev1.GroupStatementRecord { return &storagev1.GroupStatementRecord{} }, fn)
}

func (t *pgTx) EpochKey(app, group, identity string, epoch uint64) (*storagev1.GroupEpochKeyRecord, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	e, err := pgInt("epoch", epoch)
	if err != nil {
		return nil, nil // no stored key is of an epoch that high
	}
	return getOne(t, "epoch_keys", identity, &storagev1.GroupEpochKeyRecord{},
		"SELECT record FROM epoch_keys WHERE app_id = $1 AND group_id = $2 AND identity = $3 AND epoch = $4", app, group, identity, e)
}

func (t *pgTx) PutEpochKey(app, group, identity string, k *storagev1.GroupEpochKeyRecord) error {
	epoch, err := pgInt("epoch", k.GetEpoch())
	if err != nil {
		return err
	}
	return t.put(app, group, k, `INSERT INTO epoch_keys (app_id, group_id, identity, epoch, record) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (app_id, group_id, identity, epoch) DO UPDATE SET record = EXCLUDED.record`, identity, epoch)
}

func (t *pgTx) EpochKeys(app, group, identity string, after uint64, fn func(*storagev1.GroupEpochKeyRecord) (bool, error)) error {
	if err := t.lock(app, group); err != nil {
		return err
	}
	from, err := pgInt("epoch", after)
	if err != nil {
		return nil // none is above
	}
	return scanPages(t, "epoch_keys", `SELECT epoch, record FROM epoch_keys WHERE app_id = $1 AND group_id = $2 AND identity = $3 AND epoch > $4
		ORDER BY epoch LIMIT $5`, []any{app, group, identity}, from, func() *storagev1.GroupEpochKeyRecord { return &storagev1.GroupEpochKeyRecord{} }, fn)
}

func (t *pgTx) Upload(app, group, owner string) (*storagev1.GroupUploadRecord, error) {
	return groupRow(t, "uploads", "owner", app, group, owner, &storagev1.GroupUploadRecord{})
}

func (t *pgTx) PutUpload(app, group string, u *storagev1.GroupUploadRecord) error {
	return t.put(app, group, u, `INSERT INTO uploads (app_id, group_id, owner, upload_id, expires_ns, record) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (app_id, group_id, owner) DO UPDATE SET upload_id = EXCLUDED.upload_id, expires_ns = EXCLUDED.expires_ns, record = EXCLUDED.record`,
		u.GetOwner(), u.GetUploadId(), nanos(u.GetExpiresAt().AsTime()))
}

func (t *pgTx) DeleteUpload(app, group, owner string) error {
	return t.exec(app, group, `WITH gone AS (DELETE FROM uploads WHERE app_id = $1 AND group_id = $2 AND owner = $3 RETURNING upload_id)
		DELETE FROM upload_keys WHERE upload_id IN (SELECT upload_id FROM gone)`, owner)
}

// StagedKey and the other methods of an upload's keys take no lock: the service reaches
// them through the upload, whose group is locked.
func (t *pgTx) StagedKey(uploadID, identity string) (*storagev1.GroupStagedKeyRecord, error) {
	return getOne(t, "upload_keys", identity, &storagev1.GroupStagedKeyRecord{},
		"SELECT record FROM upload_keys WHERE upload_id = $1 AND identity = $2", uploadID, identity)
}

func (t *pgTx) PutStagedKey(uploadID string, k *storagev1.GroupStagedKeyRecord) error {
	if err := t.writing(); err != nil {
		return err
	}
	rec, err := records.Encode(k)
	if err != nil {
		return err
	}
	_, err = t.tx.Exec(t.ctx, `INSERT INTO upload_keys (upload_id, identity, record) VALUES ($1, $2, $3)
		ON CONFLICT (upload_id, identity) DO UPDATE SET record = EXCLUDED.record`, uploadID, k.GetIdentity(), rec)
	return err
}

func (t *pgTx) StagedKeys(uploadID string) ([]*storagev1.GroupStagedKeyRecord, error) {
	return getAll(t, "upload_keys", uploadID, func() *storagev1.GroupStagedKeyRecord { return &storagev1.GroupStagedKeyRecord{} },
		"SELECT record FROM upload_keys WHERE upload_id = $1 ORDER BY identity", uploadID)
}

func (t *pgTx) ExpiredUploads(now time.Time, limit int) ([][3]string, error) {
	rows, err := t.tx.Query(t.ctx, `SELECT app_id, group_id, owner FROM uploads WHERE expires_ns <= $1
		ORDER BY app_id, group_id, owner LIMIT $2`, nanos(now), limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) ([3]string, error) {
		var u [3]string
		err := r.Scan(&u[0], &u[1], &u[2])
		return u, err
	})
}

func (t *pgTx) SetRotationDue(app, group string, old, at time.Time) error {
	if !old.IsZero() {
		if err := t.exec(app, group, "DELETE FROM rotation_due WHERE app_id = $1 AND group_id = $2 AND due_ns = $3", nanos(old)); err != nil {
			return err
		}
	}
	if at.IsZero() {
		return t.lock(app, group)
	}
	return t.exec(app, group, "INSERT INTO rotation_due (app_id, group_id, due_ns) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", nanos(at))
}

func (t *pgTx) DueGroups(now time.Time, limit int) ([]DueEntry, error) {
	rows, err := t.tx.Query(t.ctx, `SELECT due_ns, app_id, group_id FROM rotation_due WHERE due_ns <= $1
		ORDER BY due_ns, app_id, group_id LIMIT $2`, nanos(now), limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DueEntry, error) {
		var at int64
		var d DueEntry
		err := r.Scan(&at, &d.App, &d.Group)
		d.At = time.Unix(0, at)
		return d, err
	})
}
