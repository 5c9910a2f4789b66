package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/storecopy"
	"github.com/umbra-e2ee/umbra/services/backup"
	"github.com/umbra-e2ee/umbra/services/card"
	"github.com/umbra-e2ee/umbra/services/group"
	"github.com/umbra-e2ee/umbra/services/identity"
	"github.com/umbra-e2ee/umbra/services/messaging"
)

// A copier copies one service's bbolt file into its PostgreSQL schema (or, verify,
// only compares them): it opens the service's store as `umbra serve --store` does,
// migrations applied, and runs the service's BoltCopier.
type copier func(ctx context.Context, url, path string, verify bool, log *zap.Logger) (*storecopy.Result, error)

func copierOf[S interface{ Close() error }](
	open func(ctx context.Context, url string, log *zap.Logger) (S, error),
	boltCopier func(S) *storecopy.Copier,
) copier {
	return func(ctx context.Context, url, path string, verify bool, log *zap.Logger) (*storecopy.Result, error) {
		s, err := open(ctx, url, log)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		if verify {
			return boltCopier(s).Verify(ctx, path)
		}
		return boltCopier(s).Copy(ctx, path)
	}
}

// copiers are the services whose store `umbra admin migrate` copies.
var copiers = map[string]copier{
	gateway.Identity: copierOf(identity.OpenPostgresStore, identity.BoltCopier),
	gateway.Card:     copierOf(card.OpenPostgresStore, card.BoltCopier),
	gateway.Backup:   copierOf(backup.OpenPostgresStore, backup.BoltCopier),
	gateway.Group:    copierOf(group.OpenPostgresStore, group.BoltCopier),
	gateway.Messaging: copierOf(func(ctx context.Context, url string, log *zap.Logger) (*messaging.PostgresStore, error) {
		return messaging.OpenPostgresStore(ctx, url, messaging.PostgresOptions{}, log)
	}, messaging.BoltCopier),
}

// migrateStores is `umbra admin migrate`: it copies the stores of the stopped node's data
// folder from into PostgreSQL at url, each in its service's schema, and verifies each
// copy (docs/storage-postgres.md, "Moving an existing deployment"). only, when set,
// names the stores to copy (comma-separated); verify compares without writing.
func migrateStores(ctx context.Context, stdout io.Writer, from, url, only string, verify bool) error {
	if !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://") {
		return errors.New("--to takes a PostgreSQL connection string, postgres://user:password@host:port/database")
	}
	if strings.Contains(only, "://") {
		return errors.New("--store names the stores to copy here (identity,card,...), and the connection string goes in --to; is UMBRA_STORE, which serve reads, set in this environment? Unset it, or give --store")
	}
	var named []string
	if only != "" {
		for _, s := range strings.Split(only, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(gateway.Services(), s) {
				return fmt.Errorf("there is no store %q (stores: %s)", s, strings.Join(gateway.Services(), ", "))
			}
			if !slices.Contains(named, s) {
				named = append(named, s)
			}
		}
	}
	present, err := node.DataStores(from, named)
	if err != nil {
		return err
	}
	stores := present
	if len(named) > 0 {
		for _, s := range named {
			if !slices.Contains(present, s) {
				return fmt.Errorf("%s holds no %s store (%s.db)", from, s, s)
			}
		}
		stores = named
	}
	if len(stores) == 0 {
		return fmt.Errorf("%s holds no store to copy", from)
	}
	// Everything is checked before anything is written: a store without a copier, or
	// a file that a running service holds.
	for _, s := range stores {
		if copiers[s] == nil {
			return fmt.Errorf("the %s store cannot be copied yet (umbra admin migrate copies %s); nothing was copied: leave it out with --store", s, strings.Join(slices.Sorted(maps.Keys(copiers)), ", "))
		}
		if err := boltdb.CheckUnused(node.StorePath(from, s)); err != nil {
			return fmt.Errorf("%v: stop the %s service (every process serving %s) before copying its store; nothing was copied", err, s, from)
		}
	}
	for _, s := range stores {
		res, err := copiers[s](ctx, url, node.StorePath(from, s), verify, zap.NewNop())
		if res != nil {
			res.Print(stdout)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	what := "copied and verified"
	if verify {
		what = "verified"
	}
	fmt.Fprintf(stdout, "%s: %s into PostgreSQL; start the services with --store\n", strings.Join(stores, ", "), what)
	return nil
}
