package messaging

import (
	"context"

	"github.com/umbra-e2ee/umbra/internal/storecopy"
)

// BoltCopier copies messaging.db, a stopped service's file, into pg's schema and
// verifies the copy, or only compares the two (`umbra admin migrate`;
// docs/storage-postgres.md, "Moving an existing deployment"). The file is only read.
// The time partitions its entries' expiries need are made first, as a send would make
// them (they are the schema's structure, not data: a copy that rolls back leaves them,
// empty).
func BoltCopier(pg *PostgresStore) *storecopy.Copier {
	return storecopy.NewCopier(pg.db, postgresCopy, boltSource).Prepare(func(ctx context.Context, path string) error {
		lo, hi, ok, err := boltExpiries(path)
		if err != nil || !ok {
			return err
		}
		return pg.ensurePartitions(ctx, lo, hi)
	})
}
