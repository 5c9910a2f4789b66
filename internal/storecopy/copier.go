// The copier of one service's store: its bbolt source and its PostgreSQL plan joined.

package storecopy

import "context"

// Engine is the PostgreSQL side of a copy: a service's schema (internal/pgdb's DB), which
// writes a Source into its tables by the service's plan P (pgdb.Copy) and proves the
// copy exact, or only compares the two.
type Engine[P any] interface {
	CopyIn(ctx context.Context, plan P, src Source) (*Result, error)
	VerifyCopy(ctx context.Context, plan P, src Source) (*Result, error)
}

// Copier copies one service's bbolt file into its PostgreSQL schema, or compares them
// (`umbra admin migrate`; docs/storage-postgres.md, "Moving an existing deployment").
// Each service has one, joining the source its bbolt engine reads (store_bolt_migrate.go)
// and the plan its PostgreSQL engine writes by (store_postgres_migrate.go).
type Copier struct {
	source         func(path string) Source
	copyIn, verify func(ctx context.Context, src Source) (*Result, error)
	prepare        func(ctx context.Context, path string) error
}

// NewCopier is the copier of the files source reads into engine's schema by plan.
func NewCopier[P any](engine Engine[P], plan P, source func(path string) Source) *Copier {
	return &Copier{
		source: source,
		copyIn: func(ctx context.Context, src Source) (*Result, error) { return engine.CopyIn(ctx, plan, src) },
		verify: func(ctx context.Context, src Source) (*Result, error) { return engine.VerifyCopy(ctx, plan, src) },
	}
}

// Prepare sets a step that runs before each copy of the file at path (the time
// partitions its entries need, for messaging); an error stops the copy.
func (c *Copier) Prepare(prepare func(ctx context.Context, path string) error) *Copier {
	c.prepare = prepare
	return c
}

// WithSource is a copier that reads through wrap(source): a test's interrupted or
// slowed source.
func (c *Copier) WithSource(wrap func(Source) Source) *Copier {
	d := *c
	d.source = func(path string) Source { return wrap(c.source(path)) }
	return &d
}

// Source streams the records of the bbolt file at path.
func (c *Copier) Source(path string) Source { return c.source(path) }

// Copy copies the bbolt file at path, a stopped service's, into the schema and verifies
// the copy (Engine.CopyIn: all of it or nothing). The file is only read.
func (c *Copier) Copy(ctx context.Context, path string) (*Result, error) {
	if c.prepare != nil {
		if err := c.prepare(ctx, path); err != nil {
			return nil, err
		}
	}
	return c.copyIn(ctx, c.source(path))
}

// Verify compares the schema with the bbolt file at path, kind by kind, writing
// nothing.
func (c *Copier) Verify(ctx context.Context, path string) (*Result, error) {
	return c.verify(ctx, c.source(path))
}
