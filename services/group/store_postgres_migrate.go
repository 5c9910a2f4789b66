package group

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

func decoded[M proto.Message](m M, value []byte) (M, error) {
	return m, proto.Unmarshal(value, m)
}

// outboxSequence is the outbox's identity column's sequence.
const outboxSequence = "pg_get_serial_sequence('outbox', 'sequence')"

// postgresCopy writes group.db's record kinds into the tables of
// migrations/00001_group.sql and reads them back as group.db's pairs (pgdb.CopyIn). The
// indexes of group.db (member_groups, invitee_groups, invitation_expiry) are rebuilt
// from the rows they index and compared entry by entry; the outbox's records, which
// PostgreSQL keeps without their sequence (the column is it), are compared with it put
// back; the outbox's sequence and the card cursor go on from the file's.
var postgresCopy = pgdb.Copy{Kinds: []pgdb.CopyKind{
	{
		Name: "groups",
		Load: pgdb.InsertRow("groups", 2, []string{"app_id", "group_id", "record"}, nil),
		Dump: "SELECT " + pgdb.KeySQL("app_id", "group_id") + ", record FROM groups ORDER BY 1",
	},
	{
		Name: "members",
		Load: pgdb.InsertRow("members", 3, []string{"app_id", "group_id", "identity", "record"}, nil),
		Dump: "SELECT " + pgdb.KeySQL("app_id", "group_id", "identity") + ", record FROM members ORDER BY 1",
	},
	{
		Name: "member_groups",
		Dump: "SELECT " + pgdb.KeySQL("app_id", "identity", "group_id") + ", ''::bytea FROM members ORDER BY 1",
	},
	{
		Name: "bans",
		Load: pgdb.InsertRow("bans", 3, []string{"app_id", "group_id", "identity", "record"}, nil),
		Dump: "SELECT " + pgdb.KeySQL("app_id", "group_id", "identity") + ", record FROM bans ORDER BY 1",
	},
	{
		Name: "join_requests",
		Load: pgdb.InsertRow("join_requests", 3, []string{"app_id", "group_id", "identity", "record"}, nil),
		Dump: "SELECT " + pgdb.KeySQL("app_id", "group_id", "identity") + ", record FROM join_requests ORDER BY 1",
	},
	{
		Name: "invitations",
		Load: pgdb.InsertRow("invitations", 3, []string{"app_id", "group_id", "invitee", "expires_ns", "record"}, func(value []byte) ([]any, error) {
			inv, err := decoded(&storagev1.GroupInvitationRecord{}, value)
			return []any{nanos(inv.GetExpiresAt().AsTime())}, err
		}),
		Dump: "SELECT " + pgdb.KeySQL("app_id", "group_id", "invitee") + ", record FROM invitations ORDER BY 1",
	},
	{
		Name: "invitee_groups",
		Dump: "SELECT " + pgdb.KeySQL("app_id", "invitee", "group_id") + ", ''::bytea FROM invitations ORDER BY 1",
	},
	{
		Name: "invitation_expiry",
		Dump: "SELECT int8send(expires_ns) || " + pgdb.KeySQL("app_id", "group_id", "invitee") + ", ''::bytea FROM invitations ORDER BY 1",
	},
	{
		Name: "epochs",
		Load: pgdb.InsertNumbered("epochs", "app_id", "group_id", "epoch", "record"),
		Dump: "SELECT " + pgdb.KeySQL("app_id", "group_id") + ` || '\x00'::bytea || int8send(epoch), record FROM epochs ORDER BY 1`,
	},
	{
		Name: "membership",
		Load: pgdb.InsertNumbered("statements", "app_id", "group_id", "sequence", "record"),
		Dump: "SELECT " + pgdb.KeySQL("app_id", "group_id") + ` || '\x00'::bytea || int8send(sequence), record FROM statements ORDER BY 1`,
	},
	{
		Name: "epoch_keys",
		Load: pgdb.InsertNumbered("epoch_keys", "app_id", "group_id", "identity", "epoch", "record"),
		Dump: "SELECT " + pgdb.KeySQL("app_id", "group_id", "identity") + ` || '\x00'::bytea || int8send(epoch), record FROM epoch_keys ORDER BY 1`,
	},
	{
		Name: "uploads",
		Load: pgdb.InsertRow("uploads", 3, []string{"app_id", "group_id", "owner", "upload_id", "expires_ns", "record"}, func(value []byte) ([]any, error) {
			u, err := decoded(&storagev1.GroupUploadRecord{}, value)
			return []any{u.GetUploadId(), nanos(u.GetExpiresAt().AsTime())}, err
		}),
		Dump: "SELECT " + pgdb.KeySQL("app_id", "group_id", "owner") + ", record FROM uploads ORDER BY 1",
	},
	{
		Name: "upload_keys",
		Load: pgdb.InsertRow("upload_keys", 2, []string{"upload_id", "identity", "record"}, nil),
		Dump: "SELECT " + pgdb.KeySQL("upload_id", "identity") + ", record FROM upload_keys ORDER BY 1",
	},
	{
		// u64(due ns) 0 app 0 group, no value.
		Name: "rotation_due",
		Load: func(b *pgx.Batch, key, value []byte) error {
			if len(key) < 10 || key[8] != 0 || len(value) != 0 {
				return fmt.Errorf("not a rotation entry")
			}
			due := int64(binary.BigEndian.Uint64(key[:8])) // Unix nanoseconds, as int8send writes them
			parts, err := pgdb.SplitKey(key[9:], 2)
			if err != nil {
				return err
			}
			return pgdb.Insert(b, "rotation_due", []string{"app_id", "group_id", "due_ns"}, []any{parts[0], parts[1], due})
		},
		Dump: `SELECT int8send(due_ns) || '\x00'::bytea || ` + pgdb.KeySQL("app_id", "group_id") + ", ''::bytea FROM rotation_due ORDER BY 1",
	},
	{
		Name: "group_outbox",
		Load: func(b *pgx.Batch, key, value []byte) error {
			seq, err := pgdb.CopyU64(key)
			if err != nil {
				return err
			}
			r, err := decoded(&storagev1.GroupOutboxRecord{}, value)
			if err != nil {
				return err
			}
			if r.GetSequence() != uint64(seq) {
				return fmt.Errorf("the outbox record at %d says sequence %d", seq, r.GetSequence())
			}
			r.Sequence = 0
			rec, err := records.Encode(r)
			if err != nil {
				return err
			}
			return pgdb.Insert(b, "outbox", []string{"sequence", "record"}, []any{seq, rec})
		},
		Dump: "SELECT int8send(sequence), record FROM outbox ORDER BY 1",
		Convert: func(key, value []byte) ([]byte, []byte, error) {
			seq, err := pgdb.CopyU64(key)
			if err != nil {
				return nil, nil, err
			}
			r, err := decoded(&storagev1.GroupOutboxRecord{}, value)
			if err != nil {
				return nil, nil, err
			}
			r.Sequence = uint64(seq)
			rec, err := records.Encode(r)
			return key, rec, err
		},
	},
	{
		Name: "group_outbox.sequence",
		Load: pgdb.SetCounter("SELECT setval(" + outboxSequence + ", $1)"),
		Dump: "SELECT 'sequence'::bytea, int8send(v) FROM (SELECT pg_sequence_last_value(" + outboxSequence + "::regclass) AS v) s WHERE v IS NOT NULL",
	},
	{
		// The card cursor (the mark of a complete invitation_expiry is left out by the
		// source: boltSource).
		Name: "group_state",
		Load: func(b *pgx.Batch, key, value []byte) error {
			if !bytes.Equal(key, cardCursorKey) {
				return fmt.Errorf("group_state holds %q, which the copier does not know", key)
			}
			seq, err := pgdb.CopyU64(value)
			b.Queue("UPDATE card_cursor SET sequence = $1", seq)
			return err
		},
		Dump: "SELECT 'card_cursor'::bytea, int8send(sequence) FROM card_cursor WHERE sequence <> 0",
	},
}}
