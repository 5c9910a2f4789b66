package group

import "github.com/umbra-e2ee/umbra/internal/storecopy"

// BoltCopier copies group.db, a stopped service's file, into pg's schema and verifies
// the copy, or only compares the two (`umbra admin migrate`; docs/storage-postgres.md,
// "Moving an existing deployment"). The file is only read.
func BoltCopier(pg *PostgresStore) *storecopy.Copier {
	return storecopy.NewCopier(pg.db, postgresCopy, boltSource)
}
