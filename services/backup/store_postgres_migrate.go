package backup

import (
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
)

// postgresCopy writes backup.db's record kinds into the tables of
// migrations/00001_backup.sql and reads them back as backup.db's pairs (pgdb.CopyIn).
// The outbox's sequence goes on from the file's, so that events written after the copy
// come after the ones it holds.
var postgresCopy = pgdb.Copy{Kinds: []pgdb.CopyKind{
	{
		Name: "backup_slots", // app 0 identity 0 u8(slot)
		Load: func(b *pgx.Batch, key, value []byte) error {
			parts, err := pgdb.SplitKey(key, 3)
			if err != nil {
				return err
			}
			if len(parts[2]) != 1 {
				return fmt.Errorf("the slot is %d bytes, not one", len(parts[2]))
			}
			b.Queue("INSERT INTO slots (app_id, identity, slot, record) VALUES ($1, $2, $3, $4)", parts[0], parts[1], int32(parts[2][0]), value)
			return nil
		},
		Dump: "SELECT " + pgdb.KeySQL("app_id", "identity") + ` || '\x00'::bytea || set_byte('\x00'::bytea, 0, slot), record
			FROM slots ORDER BY 1`,
	},
	{
		Name: "backup_outbox",
		Load: pgdb.InsertU64("outbox", "sequence", "record"),
		Dump: "SELECT int8send(sequence), record FROM outbox ORDER BY 1",
	},
	{
		Name: "backup_outbox.sequence",
		Load: pgdb.SetCounter("SELECT setval('outbox_sequence', $1)"),
		Dump: "SELECT 'sequence'::bytea, int8send(last_value) FROM outbox_sequence WHERE is_called",
	},
	{
		Name: "backup_server", // the server secret's check value
		Load: pgdb.InsertRow("server_state", 1, []string{"name", "value"}, nil),
		Dump: "SELECT " + pgdb.KeySQL("name") + ", value FROM server_state ORDER BY 1",
	},
}}
