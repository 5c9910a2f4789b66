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
		Load: func(b *pgx.Batch, key, value []byte) error {
			b.Queue("INSERT INTO apps (app_id, record) VALUES ($1, $2)", string(key), value)
			return nil
		},
		Dump: "SELECT convert_to(app_id, 'UTF8'), record FROM apps ORDER BY 1",
	},
	{
		Name: "app_keys",
		Load: func(b *pgx.Batch, key, value []byte) error {
			rec := &identitystoragev1.AppKeyRecord{}
			if err := proto.Unmarshal(value, rec); err != nil {
				return err
			}
			b.Queue("INSERT INTO app_keys (key_id, app_id, record) VALUES ($1, $2, $3)", string(key), rec.GetAppId(), value)
			return nil
		},
		Dump: "SELECT convert_to(key_id, 'UTF8'), record FROM app_keys ORDER BY 1",
	},
	{
		Name: "app_keys_by_app",
		Dump: `SELECT convert_to(app_id, 'UTF8') || '\x00'::bytea || convert_to(key_id, 'UTF8'), ''::bytea FROM app_keys ORDER BY 1`,
	},
	{
		Name: "signing_keys",
		Load: func(b *pgx.Batch, key, value []byte) error {
			b.Queue("INSERT INTO signing_keys (key_id, record) VALUES ($1, $2)", string(key), value)
			return nil
		},
		Dump: "SELECT convert_to(key_id, 'UTF8'), record FROM signing_keys ORDER BY 1",
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
		Dump: `SELECT convert_to(app_id, 'UTF8') || '\x00'::bytea || convert_to(identity, 'UTF8'), record FROM revocations ORDER BY 1`,
	},
	{
		Name: "revocation_log",
		Dump: `SELECT int8send(sequence), convert_to(app_id, 'UTF8') || '\x00'::bytea || convert_to(identity, 'UTF8') FROM revocations ORDER BY 1`,
	},
	{
		Name: "revocation_log.sequence",
		Load: func(b *pgx.Batch, _, value []byte) error {
			last, err := pgdb.CopyU64(value)
			b.Queue("UPDATE revocation_sequence SET last = $1", last)
			return err
		},
		Dump: "SELECT 'sequence'::bytea, int8send(last) FROM revocation_sequence WHERE last <> 0",
	},
}}
