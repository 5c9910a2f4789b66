package identity

import (
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	identitystoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/identity/v1"
)

// postgresCopy writes identity.db's record kinds into the tables of
// migrations/00001_identity.sql and reads them back as identity.db's pairs
// (pgdb.CopyIn). Keys are rebuilt as the bbolt engine makes them: ids as their bytes,
// app and identity joined by a zero byte, sequences as 8 bytes big-endian (int8send).
var postgresCopy = pgdb.Copy{Kinds: []pgdb.CopyKind{
	{
		Name: "apps",
		Load: pgdb.InsertRow("apps", 1, []string{"app_id", "record"}, nil),
		Dump: "SELECT " + pgdb.KeySQL("app_id") + ", record FROM apps ORDER BY 1",
	},
	{
		Name: "app_keys",
		Load: pgdb.InsertRow("app_keys", 1, []string{"key_id", "app_id", "record"}, func(value []byte) ([]any, error) {
			rec := &identitystoragev1.AppKeyRecord{}
			err := proto.Unmarshal(value, rec)
			return []any{rec.GetAppId()}, err
		}),
		Dump: "SELECT " + pgdb.KeySQL("key_id") + ", record FROM app_keys ORDER BY 1",
	},
	{
		Name: "app_keys_by_app",
		Dump: "SELECT " + pgdb.KeySQL("app_id", "key_id") + ", ''::bytea FROM app_keys ORDER BY 1",
	},
	{
		Name: "signing_keys",
		Load: pgdb.InsertRow("signing_keys", 1, []string{"key_id", "record"}, nil),
		Dump: "SELECT " + pgdb.KeySQL("key_id") + ", record FROM signing_keys ORDER BY 1",
	},
	{
		Name: "revocations",
		Load: func(b *pgx.Batch, key, value []byte) error {
			rec := &identitystoragev1.RevocationRecord{}
			if err := proto.Unmarshal(value, rec); err != nil {
				return err
			}
			b.Queue("INSERT INTO revocations (app_id, identity, sequence, record) VALUES ($1, $2, $3, $4)",
				rec.GetAppId(), rec.GetIdentity(), int64(rec.GetSequence()), value)
			return nil
		},
		Dump: "SELECT " + pgdb.KeySQL("app_id", "identity") + ", record FROM revocations ORDER BY 1",
	},
	{
		Name: "revocation_log",
		Dump: "SELECT int8send(sequence), " + pgdb.KeySQL("app_id", "identity") + " FROM revocations ORDER BY 1",
	},
	{
		Name: "revocation_log.sequence",
		Load: pgdb.SetCounter("UPDATE revocation_sequence SET last = $1"),
		Dump: "SELECT 'sequence'::bytea, int8send(last) FROM revocation_sequence WHERE last <> 0",
	},
}}
