package backup

import (
	"context"

	"github.com/umbra-e2ee/umbra/internal/storecopy"
)

// CopyBoltToPostgres copies backup.db at boltPath, a stopped service's file, into
// pg's schema and verifies the copy (`umbra admin migrate`; docs/storage-postgres.md,
// "Moving an existing deployment"). The file is only read.
func CopyBoltToPostgres(ctx context.Context, boltPath string, pg *PostgresStore) (*storecopy.Result, error) {
	return pg.db.CopyIn(ctx, postgresCopy, boltSource(boltPath))
}

// VerifyBoltCopy compares pg's schema with backup.db at boltPath, kind by kind,
// writing nothing.
func VerifyBoltCopy(ctx context.Context, boltPath string, pg *PostgresStore) (*storecopy.Result, error) {
	return pg.db.VerifyCopy(ctx, postgresCopy, boltSource(boltPath))
}
