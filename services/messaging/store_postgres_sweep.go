package messaging

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Retention in PostgreSQL. Messages, events and inbox items live in tables partitioned
// by their expiry time. Sweep moves the horizon (sweep_state) to now: from then on no
// reader sees an entry that expires at or before it, exactly as bbolt's sweep deletes
// those entries, and a client_message_id or event_id whose entry has expired may be
// used again. The rows themselves go when their partition is wholly behind the
// horizon: Sweep drops the partition, one DROP per table instead of a DELETE per row.
// Only the idempotency keys (idempotency, event_ids: a narrow row per message or
// event, in tables without a time partition so that their primary keys stay unique)
// are deleted row by row, in bounded batches that replicas share with SKIP LOCKED.

// partitionedTables share their partitions' ranges.
var partitionedTables = []string{"messages", "events", "inbox"}

// partitionLockTimeout bounds the wait for the locks that making or dropping a
// partition takes on its table: a drop locks out the table's readers and writers
// while it waits, so it gives up soon and the next sweep tries again.
const partitionLockTimeout = "2s"

// partitionLock is the advisory lock under which partitions are made and dropped, so
// that replicas do it one at a time.
var partitionLock = func() int64 {
	h := fnv.New64a()
	h.Write([]byte("umbra partitions " + Schema))
	return int64(h.Sum64() &^ (1 << 63))
}()

// partitionCache is what this store knows of the partitions: ranges [lower, upper) of
// expires_at, sorted. It may lag other replicas' changes; a write that misses a
// partition makes it (ensurePartitions), which reads the table first.
type partitionCache struct {
	mu     sync.Mutex
	ranges [][2]int64
}

// covers reports whether every time in [lo, hi] falls in a known partition.
func (c *partitionCache) covers(lo, hi int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := lo
	for _, r := range c.ranges {
		if r[1] <= at {
			continue
		}
		if r[0] > at {
			return false
		}
		at = r[1]
		if at > hi {
			return true
		}
	}
	return false
}

func (c *partitionCache) set(ranges [][2]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ranges = ranges
}

// partitionName names the partitions of the range starting at lower (Unix ns, whole
// seconds): its start in UTC, 20261101t000000.
func partitionName(lower int64) string {
	return time.Unix(0, lower).UTC().Format("20060102t150405")
}

// readPartitions returns the partitions' ranges, sorted.
func readPartitions(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) ([][2]int64, error) {
	rows, err := q.Query(ctx, "SELECT lower, upper FROM partitions ORDER BY lower")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]int64, error) {
		var lo, hi int64
		err := r.Scan(&lo, &hi)
		return [2]int64{lo, hi}, err
	})
}

// missingRanges returns the ranges to make so that [lo, hi] is covered: the slots of
// width w (aligned on the Unix epoch) that it touches, less what have covers.
func missingRanges(have [][2]int64, lo, hi, w int64) [][2]int64 {
	var out [][2]int64
	for start := lo - lo%w; start <= hi; start += w {
		a, b := start, start+w
		for _, r := range have { // sorted: cut [a, b) where the existing ranges are
			if r[1] <= a || r[0] >= b {
				continue
			}
			if r[0] > a {
				out = append(out, [2]int64{a, r[0]})
			}
			a = max(a, r[1])
		}
		if a < b {
			out = append(out, [2]int64{a, b})
		}
	}
	return out
}

// ensurePartitions makes the partitions that expiry times in [lo, hi] need, under the
// advisory lock so that replicas make each once. A partition is made as a plain table
// and attached, which locks the partitioned table only in SHARE UPDATE EXCLUSIVE mode:
// its readers and writers go on meanwhile.
func (s *PostgresStore) ensurePartitions(ctx context.Context, lo, hi int64) error {
	if s.parts.covers(lo, hi) {
		return nil
	}
	var ranges [][2]int64
	err := s.db.InTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '"+partitionLockTimeout+"'"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", partitionLock); err != nil {
			return err
		}
		have, err := readPartitions(ctx, tx)
		if err != nil {
			return err
		}
		missing := missingRanges(have, lo, hi, s.width)
		for _, r := range missing {
			name := partitionName(r[0])
			for _, table := range partitionedTables {
				part := pgx.Identifier{table + "_" + name}.Sanitize()
				if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)", part, table)); err != nil {
					return fmt.Errorf("make partition %s: %w", part, err)
				}
				if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%d) TO (%d)", table, part, r[0], r[1])); err != nil {
					return fmt.Errorf("attach partition %s: %w", part, err)
				}
			}
			if _, err := tx.Exec(ctx, "INSERT INTO partitions (lower, upper, name) VALUES ($1, $2, $3)", r[0], r[1], name); err != nil {
				return err
			}
		}
		ranges = append(have, missing...)
		slices.SortFunc(ranges, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
		if len(missing) > 0 {
			s.log.Info("made time partitions", zap.Int("count", len(missing)),
				zap.Time("from", time.Unix(0, missing[0][0]).UTC()), zap.Time("to", time.Unix(0, missing[len(missing)-1][1]).UTC()))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("messaging store: make the time partitions for expiries %s to %s: %w",
			time.Unix(0, lo).UTC().Format(time.RFC3339), time.Unix(0, hi).UTC().Format(time.RFC3339), err)
	}
	s.parts.set(ranges)
	return nil
}

// dropPartitions drops the partitions wholly at or before horizon: every row in them
// has expired, and no reader sees it since the horizon passed it.
func (s *PostgresStore) dropPartitions(ctx context.Context, horizon int64) (int, error) {
	var n int
	err := s.db.Pool.QueryRow(ctx, "SELECT count(*) FROM partitions WHERE upper <= $1", horizon).Scan(&n)
	if err != nil || n == 0 {
		return 0, err
	}
	var ranges [][2]int64
	dropped := 0
	err = s.db.InTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		dropped = 0
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '"+partitionLockTimeout+"'"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", partitionLock); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, "SELECT lower, name FROM partitions WHERE upper <= $1 ORDER BY lower", horizon)
		if err != nil {
			return err
		}
		type part struct {
			Lower int64
			Name  string
		}
		old, err := pgx.CollectRows(rows, pgx.RowToStructByPos[part])
		if err != nil {
			return err
		}
		for _, p := range old {
			names := make([]string, len(partitionedTables))
			for i, table := range partitionedTables {
				names[i] = pgx.Identifier{table + "_" + p.Name}.Sanitize()
			}
			if _, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+strings.Join(names, ", ")); err != nil {
				return fmt.Errorf("drop partitions %s: %w", strings.Join(names, ", "), err)
			}
			if _, err := tx.Exec(ctx, "DELETE FROM partitions WHERE lower = $1", p.Lower); err != nil {
				return err
			}
			dropped++
		}
		ranges, err = readPartitions(ctx, tx)
		return err
	})
	if err != nil {
		return 0, err
	}
	s.parts.set(ranges)
	return dropped, nil
}

// Sweep implements Store. It moves the horizon to now (every entry that expired by
// then is gone for readers at once), deletes up to limit expired idempotency keys and
// event ids, drops the partitions wholly behind the horizon, and makes the partitions
// of the next retention period ahead. deleted counts the expired messages and events
// whose keys it deleted, one each, as bbolt counts the entries it deletes. Several
// replicas may sweep at once: the horizon only moves forwards, each key is deleted by
// one of them (SKIP LOCKED), and partitions change under an advisory lock.
func (s *PostgresStore) Sweep(now time.Time, limit int) (int, bool, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var horizon int64
	err := s.db.Pool.QueryRow(ctx, "UPDATE sweep_state SET horizon = GREATEST(horizon, $1) RETURNING horizon", now.UnixNano()).Scan(&horizon)
	if err != nil {
		return 0, false, s.sweepErr(err)
	}
	deleted := 0
	for _, q := range []string{
		`DELETE FROM idempotency WHERE (app_id, sender, client_message_id) IN (
			SELECT app_id, sender, client_message_id FROM idempotency WHERE expires_at <= $1
			ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
		`DELETE FROM event_ids WHERE (app_id, event_id) IN (
			SELECT app_id, event_id FROM event_ids WHERE expires_at <= $1
			ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
	} {
		if deleted >= limit {
			break
		}
		tag, err := s.db.Pool.Exec(ctx, q, horizon, limit-deleted)
		if err != nil {
			return deleted, false, s.sweepErr(err)
		}
		deleted += int(tag.RowsAffected())
	}
	more := deleted >= limit
	if _, err := s.dropPartitions(ctx, horizon); err != nil {
		return deleted, more, s.sweepErr(fmt.Errorf("drop expired partitions (the next sweep tries again): %w", err))
	}
	if ttl := s.retention.Load(); ttl > 0 {
		if err := s.ensurePartitions(ctx, horizon, horizon+ttl+s.width); err != nil {
			return deleted, more, s.sweepErr(err)
		}
	}
	return deleted, more, nil
}

func (s *PostgresStore) sweepErr(err error) error {
	return fmt.Errorf("messaging store: sweep: %w", s.db.Err(err))
}

// checkPartitionRights refuses, at start, a database user that could not make or drop
// the partitions: that needs CREATE on the schema and the rights of the owner of the
// partitioned tables.
func (s *PostgresStore) checkPartitionRights(ctx context.Context) error {
	var user, owner string
	var create, owns bool
	err := s.db.Pool.QueryRow(ctx, `
		SELECT current_user, has_schema_privilege($1, 'CREATE'),
			bool_and(pg_has_role(c.relowner, 'USAGE')), min(pg_get_userbyid(c.relowner))
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = ANY($2)`, Schema, partitionedTables).Scan(&user, &create, &owns, &owner)
	if err != nil {
		return fmt.Errorf("reading the database user's rights: %w", s.db.Err(err))
	}
	if !create || !owns {
		return fmt.Errorf("the database user %q cannot make and drop the time partitions of the tables %s of schema %s (retention drops them): it needs CREATE on the schema and the rights of the tables' owner %q: run the messaging service as that user, or grant them (GRANT CREATE ON SCHEMA %s TO %s; GRANT %s TO %s)",
			user, strings.Join(partitionedTables, ", "), Schema, owner, Schema, sqlName(user), sqlName(owner), sqlName(user))
	}
	return nil
}

var plainName = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// sqlName is a role's name as SQL writes it: bare when it can be, else quoted.
func sqlName(name string) string {
	if plainName.MatchString(name) {
		return name
	}
	return pgx.Identifier{name}.Sanitize()
}
