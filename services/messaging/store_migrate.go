package messaging

import (
	"context"

	"github.com/umbra-e2ee/umbra/internal/storecopy"
)

// CopyBoltToPostgres copies messaging.db at boltPath, a stopped service's file, into
// pg's schema and verifies the copy (`umbra admin migrate`; docs/storage-postgres.md,
// "Moving an existing deployment"). The file is only read. The time partitions its
// entries' expiries need are made first, as a send would make them.
func CopyBoltToPostgres(ctx context.Context, boltPath string, pg *PostgresStore) (*storecopy.Result, error) {
	return pg.copyIn(ctx, boltSource(boltPath), func() (int64, int64, bool, error) { return boltExpiries(boltPath) })
}

// VerifyBoltCopy compares pg's schema with messaging.db at boltPath, kind by kind,
// writing nothing.
func VerifyBoltCopy(ctx context.Context, boltPath string, pg *PostgresStore) (*storecopy.Result, error) {
	return pg.db.VerifyCopy(ctx, postgresCopy, boltSource(boltPath))
}
