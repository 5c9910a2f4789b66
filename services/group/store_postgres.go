package group

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"math"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// Schema is the PostgreSQL schema the group service owns.
const Schema = "umbra_group"

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations are the group service's goose migrations, embedded.
func Migrations() fs.FS { return pgdb.MigrationsIn(migrationFiles) }

// TxTimeout bounds one transaction of the store, and pgdb.DefaultOpTimeout each of its
// statements: a database that stops answering fails a request within the latter, while
// a long transaction that makes progress (the card follower applying a page of a
// thousand card events to every group of their identities) may take up to the former.
const TxTimeout = 2 * time.Minute

// OutboxClaim is how long a replica's claim on the outbox lasts without being renewed:
// if the replica dies while it delivers, another takes over after this long.
const OutboxClaim = 30 * time.Second

// PostgresStore is the Store in PostgreSQL: the tables of migrations/ in the schema
// Schema. Each row holds the record the bbolt engine stores, as protobuf bytes, beside
// the columns it is looked up by (docs/storage-postgres.md).
//
// Several replicas may use one database at once. A write transaction locks each group
// it touches before its first read or write of the group's data (the group's row FOR
// UPDATE, or an advisory lock on the ids of a group without a row), so the changes of
// one group take turns as they do under bbolt's single writer: an epoch commit is a
// compare-and-swap on the group's epoch, and the membership chain cannot fork. Reads
// (View) see one snapshot and take no lock.
type PostgresStore struct {
	db *pgdb.DB
	// holder names this store in outbox_claim.
	holder string

	batchMu sync.Mutex
	batch   *pgBatch
}

var _ Store = (*PostgresStore)(nil)

// OpenPostgresStore connects to the database at url, and migrates the schema (see
// pgdb.Open for what it checks first).
func OpenPostgresStore(ctx context.Context, url string, log *zap.Logger) (*PostgresStore, error) {
	db, err := pgdb.Open(ctx, pgdb.Config{URL: url, Store: "group", Schema: Schema, Migrations: Migrations(), Log: log})
	if err != nil {
		return nil, err
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		db.Close()
		return nil, fmt.Errorf("group store: randomness: %w", err)
	}
	return &PostgresStore{db: db, holder: hex.EncodeToString(b)}, nil
}

// Close gives up this store's claim on the outbox, so another replica delivers at once,
// and closes the connection pool.
func (s *PostgresStore) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	// Best effort: a claim not given up lapses after OutboxClaim.
	_, _ = s.db.Pool.Exec(ctx, "UPDATE outbox_claim SET holder = NULL, until = NULL WHERE holder = $1", s.holder)
	s.db.Close()
	return nil
}

// DB is the connection pool, for the node's readiness check.
func (s *PostgresStore) DB() *pgdb.DB { return s.db }

// View runs fn in a read-only transaction that sees one snapshot.
func (s *PostgresStore) View(fn func(Tx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), TxTimeout)
	defer cancel()
	return s.db.InTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		return fn(&pgTx{ctx: ctx, tx: boundedTx{tx}})
	})
}

// Update runs fn in a read-committed transaction whose groups are locked as it touches
// them. A transaction aborted for a deadlock (two of them locking the same groups in
// opposite orders) runs again, so fn may run more than once.
func (s *PostgresStore) Update(fn func(Tx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), TxTimeout)
	defer cancel()
	return s.db.InTx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		w := newWriteState(false)
		if err := fn(&pgTx{ctx: ctx, tx: boundedTx{tx}, w: w}); err != nil {
			return err
		}
		return w.flush(ctx, boundedTx{tx})
	})
}

// ClaimOutbox returns up to limit outbox records, oldest first, unless another replica
// holds the claim on the outbox: then none. It claims the outbox for OutboxClaim while
// there are records, and gives the claim up once there are none; the check and the
// release are one transaction, so a record written meanwhile is seen by this replica's
// read or by the other replica's claim.
func (s *PostgresStore) ClaimOutbox(limit int) ([]*storagev1.GroupOutboxRecord, error) {
	var out []*storagev1.GroupOutboxRecord
	ctx, cancel := s.db.Context()
	defer cancel()
	err := s.db.InTx(ctx, pgx.TxOptions{}, func(ptx pgx.Tx) error {
		tx := boundedTx{ptx}
		out = nil
		var holder *string
		var live bool
		if err := tx.QueryRow(ctx, "SELECT holder, coalesce(until > now(), false) FROM outbox_claim FOR UPDATE").Scan(&holder, &live); err != nil {
			return err
		}
		if holder != nil && *holder != s.holder && live {
			return nil // another replica delivers
		}
		var err error
		if out, err = (&pgTx{ctx: ctx, tx: tx}).Outbox(limit); err != nil {
			return err
		}
		if len(out) == 0 {
			_, err = tx.Exec(ctx, "UPDATE outbox_claim SET holder = NULL, until = NULL")
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE outbox_claim SET holder = $1, until = now() + $2 * interval '1 millisecond'", s.holder, OutboxClaim.Milliseconds())
		return err
	})
	return out, err
}

// writeState is what the calls of one write transaction share: the groups it has
// locked, with their records as they now are.
type writeState struct {
	// batch says that the transaction is a batch's: once it holds a lock, it may not
	// wait for another (see pgTx.lock).
	batch  bool
	groups map[groupRef]*lockedGroup
}

func newWriteState(batch bool) *writeState {
	return &writeState{batch: batch, groups: map[groupRef]*lockedGroup{}}
}

type groupRef struct{ app, group string }

// lockedGroup is a group the transaction holds: its record (none when absent is set),
// and whether the transaction changed it (dirty: PutGroup keeps the record here, and
// flush writes it once, however many times the transaction's calls changed it).
type lockedGroup struct {
	absent, dirty bool
	record        []byte
}

// flush writes the groups the transaction changed, before it commits.
func (w *writeState) flush(ctx context.Context, tx boundedTx) error {
	for k, g := range w.groups {
		if !g.dirty {
			continue
		}
		if _, err := tx.Exec(ctx, `INSERT INTO groups (app_id, group_id, record) VALUES ($1, $2, $3)
			ON CONFLICT (app_id, group_id) DO UPDATE SET record = EXCLUDED.record`, k.app, k.group, g.record); err != nil {
			return err
		}
		g.dirty = false
	}
	return nil
}

// errWouldWait is what a batch's transaction gets when a group it needs is locked by
// another transaction while it holds locks of its own: waiting could deadlock with that
// transaction, so the call is run again on its own once the batch has committed.
var errWouldWait = errors.New("group store: the group is locked by another transaction")

// pgTx is a Tx on the PostgreSQL store: read-only (w is nil) or a write transaction.
type pgTx struct {
	ctx context.Context
	tx  boundedTx
	w   *writeState
	// wroteEvents says that this call wrote outbox records; wrote that it wrote
	// anything; wouldWait that it met a group locked elsewhere (errWouldWait), after
	// which it does nothing more.
	wroteEvents, wrote, wouldWait bool
}

func (t *pgTx) WroteEvents() bool { return t.wroteEvents }

// writing is called by every method that writes: it refuses once the call met a locked
// group, and records that the call wrote.
func (t *pgTx) writing() error {
	if t.wouldWait {
		return errWouldWait
	}
	t.wrote = true
	return nil
}

// lockKey is the advisory lock of a group that has no row: a 63-bit hash of its ids.
// Two groups whose hashes collide merely take turns.
func lockKey(app, group string) int64 {
	h := fnv.New64a()
	h.Write([]byte("umbra_group\x00" + app + "\x00" + group))
	return int64(h.Sum64() &^ (1 << 63))
}

// lock takes the lock of a group in a write transaction, once: its row FOR UPDATE, or,
// for a group without a row (being created, or deleted), an advisory lock on its ids,
// under which its row is looked for again. Once it holds a group's lock, the
// transaction reads everything the group's previous writers committed, and no other
// writer changes the group until it ends.
//
// A batch's transaction waits only while it holds no lock: it runs many callers'
// changes in turn, to different groups in no set order, and two such transactions
// waiting on each other would deadlock (which PostgreSQL detects only after a second).
// So once it holds one, it takes the others with SKIP LOCKED, and a caller whose group
// is locked elsewhere gets errWouldWait and runs on its own afterwards.
func (t *pgTx) lock(app, group string) error {
	if t.w == nil {
		return nil
	}
	if t.wouldWait {
		return errWouldWait
	}
	k := groupRef{app, group}
	if _, ok := t.w.groups[k]; ok {
		return nil
	}
	var g *lockedGroup
	var err error
	if t.w.batch && len(t.w.groups) > 0 {
		g, err = t.tryLock(app, group)
	} else {
		g, err = t.waitLock(app, group)
	}
	if errors.Is(err, errWouldWait) {
		t.wouldWait = true
	}
	if err != nil {
		return err
	}
	t.w.groups[k] = g
	return nil
}

const (
	lockGroupRow    = "SELECT record FROM groups WHERE app_id = $1 AND group_id = $2 FOR UPDATE"
	tryLockGroupRow = "SELECT record FROM groups WHERE app_id = $1 AND group_id = $2 FOR UPDATE SKIP LOCKED"
	groupRowExists  = "SELECT EXISTS (SELECT 1 FROM groups WHERE app_id = $1 AND group_id = $2)"
)

func (t *pgTx) waitLock(app, group string) (*lockedGroup, error) {
	if g, err := t.lockRow(lockGroupRow, app, group); g != nil || err != nil {
		return g, err
	}
	if _, err := t.tx.Exec(t.ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(app, group)); err != nil {
		return nil, err
	}
	// Another transaction may have created the group while this one waited.
	if g, err := t.lockRow(lockGroupRow, app, group); g != nil || err != nil {
		return g, err
	}
	return &lockedGroup{absent: true}, nil
}

func (t *pgTx) tryLock(app, group string) (*lockedGroup, error) {
	if g, err := t.lockRow(tryLockGroupRow, app, group); g != nil || err != nil {
		return g, err
	}
	var exists, got bool
	if err := t.tx.QueryRow(t.ctx, groupRowExists, app, group).Scan(&exists); err != nil {
		return nil, err
	}
	if exists {
		return nil, errWouldWait
	}
	if err := t.tx.QueryRow(t.ctx, "SELECT pg_try_advisory_xact_lock($1)", lockKey(app, group)).Scan(&got); err != nil {
		return nil, err
	}
	if !got {
		return nil, errWouldWait
	}
	if g, err := t.lockRow(tryLockGroupRow, app, group); g != nil || err != nil {
		return g, err
	}
	if err := t.tx.QueryRow(t.ctx, groupRowExists, app, group).Scan(&exists); err != nil {
		return nil, err
	}
	if exists {
		return nil, errWouldWait
	}
	return &lockedGroup{absent: true}, nil
}

// lockRow runs query, which locks the group's row and returns its record: nil when it
// returned none.
func (t *pgTx) lockRow(query, app, group string) (*lockedGroup, error) {
	var rec []byte
	switch err := t.tx.QueryRow(t.ctx, query, app, group).Scan(&rec); {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return &lockedGroup{record: rec}, nil
}

func pgEncode(m proto.Message) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("group store: encode record: %w", err)
	}
	return b, nil
}

// pgDecode reads a record; one that does not parse is damaged data, named for the log.
func pgDecode(table string, key any, b []byte, m proto.Message) error {
	if err := proto.Unmarshal(b, m); err != nil {
		return errs.Damagedf("group store: %s.%s row %v does not parse: %v", Schema, table, key, err)
	}
	return nil
}

// pgInt is v as a bigint column holds it.
func pgInt(what string, v uint64) (int64, error) {
	if v > math.MaxInt64 {
		return 0, fmt.Errorf("group store: %s %d is above a bigint's range", what, v)
	}
	return int64(v), nil
}

// nanos is t as the tables order times: Unix nanoseconds, as bbolt's keys.
func nanos(t time.Time) int64 { return t.UnixNano() }

// getOne reads the record of the row query finds into m; nil when there is none.
func getOne[M proto.Message](t *pgTx, table string, key any, m M, query string, args ...any) (M, error) {
	var zero M
	var b []byte
	switch err := t.tx.QueryRow(t.ctx, query, args...).Scan(&b); {
	case errors.Is(err, pgx.ErrNoRows):
		return zero, nil
	case err != nil:
		return zero, err
	}
	if err := pgDecode(table, key, b, m); err != nil {
		return zero, err
	}
	return m, nil
}

// getAll decodes every record query returns (its one column), in its order.
func getAll[M proto.Message](t *pgTx, table string, key any, newM func() M, query string, args ...any) ([]M, error) {
	rows, err := t.tx.Query(t.ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []M
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		m := newM()
		if err := pgDecode(table, key, b, m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// pageRows is how many rows the methods that call back per record read at a time: a
// page is read whole (the connection serves one query at a time, and fn may query),
// then fn is called for each of its records, and the next page is read after the last
// key.
const pageRows = 256

// scanPages calls fn with each record of query, page by page. query returns (key,
// record) in key order, after the key given as its second-to-last argument and at most
// as many rows as its last.
func scanPages[K any, M proto.Message](t *pgTx, table string, query string, args []any, after K, newM func() M, fn func(M) (bool, error)) error {
	for {
		rows, err := t.tx.Query(t.ctx, query, append(args, after, pageRows)...)
		if err != nil {
			return err
		}
		var keys []K
		var recs [][]byte
		for rows.Next() {
			var k K
			var b []byte
			if err := rows.Scan(&k, &b); err != nil {
				rows.Close()
				return err
			}
			keys, recs = append(keys, k), append(recs, b)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for i, b := range recs {
			m := newM()
			if err := pgDecode(table, keys[i], b, m); err != nil {
				return err
			}
			if more, err := fn(m); err != nil || !more {
				return err
			}
		}
		if len(keys) < pageRows {
			return nil
		}
		after = keys[len(keys)-1]
	}
}

func (t *pgTx) Group(app, group string) (*storagev1.GroupRecord, error) {
	var b []byte
	if t.w != nil {
		if err := t.lock(app, group); err != nil {
			return nil, err
		}
		g := t.w.groups[groupRef{app, group}]
		if g.absent {
			return nil, errs.NotFoundf("group %s not found", group)
		}
		b = g.record
	} else {
		switch err := t.tx.QueryRow(t.ctx, "SELECT record FROM groups WHERE app_id = $1 AND group_id = $2", app, group).Scan(&b); {
		case errors.Is(err, pgx.ErrNoRows):
			return nil, errs.NotFoundf("group %s not found", group)
		case err != nil:
			return nil, err
		}
	}
	g := &storagev1.GroupRecord{}
	if err := pgDecode("groups", app+"/"+group, b, g); err != nil {
		return nil, err
	}
	return g, nil
}

func (t *pgTx) PutGroup(g *storagev1.GroupRecord) error {
	app, group := g.GetAppId(), g.GetGroupId()
	if err := t.lock(app, group); err != nil {
		return err
	}
	if err := t.writing(); err != nil {
		return err
	}
	rec, err := pgEncode(g)
	if err != nil {
		return err
	}
	t.w.groups[groupRef{app, group}] = &lockedGroup{record: rec, dirty: true} // written by flush
	return nil
}

func (t *pgTx) Member(app, group, identity string) (*storagev1.GroupMemberRecord, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	return getOne(t, "members", identity, &storagev1.GroupMemberRecord{},
		"SELECT record FROM members WHERE app_id = $1 AND group_id = $2 AND identity = $3", app, group, identity)
}

func (t *pgTx) PutMember(app, group string, m *storagev1.GroupMemberRecord) error {
	return t.put(app, group, m, `INSERT INTO members (app_id, group_id, identity, record) VALUES ($1, $2, $3, $4)
		ON CONFLICT (app_id, group_id, identity) DO UPDATE SET record = EXCLUDED.record`, m.GetIdentity())
}

// put writes the record m of a group's table with query, whose arguments are app,
// group, then args, then the record.
func (t *pgTx) put(app, group string, m proto.Message, query string, args ...any) error {
	if err := t.lock(app, group); err != nil {
		return err
	}
	if err := t.writing(); err != nil {
		return err
	}
	rec, err := pgEncode(m)
	if err != nil {
		return err
	}
	_, err = t.tx.Exec(t.ctx, query, append(append([]any{app, group}, args...), rec)...)
	return err
}

// exec runs a write query of the group's data, whose first arguments are app and group.
func (t *pgTx) exec(app, group, query string, args ...any) error {
	if err := t.lock(app, group); err != nil {
		return err
	}
	if err := t.writing(); err != nil {
		return err
	}
	_, err := t.tx.Exec(t.ctx, query, append([]any{app, group}, args...)...)
	return err
}

func (t *pgTx) DeleteMember(app, group, identity string) error {
	if err := t.exec(app, group, "DELETE FROM members WHERE app_id = $1 AND group_id = $2 AND identity = $3", identity); err != nil {
		return err
	}
	return t.exec(app, group, "DELETE FROM epoch_keys WHERE app_id = $1 AND group_id = $2 AND identity = $3", identity)
}

func newMemberRecord() *storagev1.GroupMemberRecord { return &storagev1.GroupMemberRecord{} }

func (t *pgTx) Members(app, group, after string, fn func(*storagev1.GroupMemberRecord) (bool, error)) error {
	if err := t.lock(app, group); err != nil {
		return err
	}
	return scanPages(t, "members", `SELECT identity, record FROM members WHERE app_id = $1 AND group_id = $2 AND identity > $3
		ORDER BY identity LIMIT $4`, []any{app, group}, after, newMemberRecord, fn)
}

func (t *pgTx) AllMembers(app, group string) ([]*storagev1.GroupMemberRecord, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	return getAll(t, "members", app+"/"+group, newMemberRecord,
		"SELECT record FROM members WHERE app_id = $1 AND group_id = $2 ORDER BY identity", app, group)
}

// MemberGroups takes no lock: the groups it lists are locked as the caller touches them.
func (t *pgTx) MemberGroups(app, identity, after string, fn func(group string) (bool, error)) error {
	for {
		rows, err := t.tx.Query(t.ctx, `SELECT group_id FROM members WHERE app_id = $1 AND identity = $2 AND group_id > $3
			ORDER BY group_id LIMIT $4`, app, identity, after, pageRows)
		if err != nil {
			return err
		}
		groups, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, g := range groups {
			if more, err := fn(g); err != nil || !more {
				return err
			}
		}
		if len(groups) < pageRows {
			return nil
		}
		after = groups[len(groups)-1]
	}
}

func (t *pgTx) Ban(app, group, identity string) (*storagev1.GroupBanRecord, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	return getOne(t, "bans", identity, &storagev1.GroupBanRecord{},
		"SELECT record FROM bans WHERE app_id = $1 AND group_id = $2 AND identity = $3", app, group, identity)
}

func (t *pgTx) PutBan(app, group string, b *storagev1.GroupBanRecord) error {
	return t.put(app, group, b, `INSERT INTO bans (app_id, group_id, identity, record) VALUES ($1, $2, $3, $4)
		ON CONFLICT (app_id, group_id, identity) DO UPDATE SET record = EXCLUDED.record`, b.GetIdentity())
}

func (t *pgTx) DeleteBan(app, group, identity string) error {
	return t.exec(app, group, "DELETE FROM bans WHERE app_id = $1 AND group_id = $2 AND identity = $3", identity)
}

func (t *pgTx) Bans(app, group string) ([]string, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	rows, err := t.tx.Query(t.ctx, "SELECT identity FROM bans WHERE app_id = $1 AND group_id = $2 ORDER BY identity", app, group)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if len(out) == 0 {
		out = nil // as the bbolt engine's
	}
	return out, err
}

func (t *pgTx) JoinRequest(app, group, identity string) (*storagev1.GroupJoinRequestRecord, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	return getOne(t, "join_requests", identity, &storagev1.GroupJoinRequestRecord{},
		"SELECT record FROM join_requests WHERE app_id = $1 AND group_id = $2 AND identity = $3", app, group, identity)
}

func (t *pgTx) PutJoinRequest(app, group string, r *storagev1.GroupJoinRequestRecord) error {
	return t.put(app, group, r, `INSERT INTO join_requests (app_id, group_id, identity, record) VALUES ($1, $2, $3, $4)
		ON CONFLICT (app_id, group_id, identity) DO UPDATE SET record = EXCLUDED.record`, r.GetIdentity())
}

func (t *pgTx) DeleteJoinRequest(app, group, identity string) error {
	return t.exec(app, group, "DELETE FROM join_requests WHERE app_id = $1 AND group_id = $2 AND identity = $3", identity)
}

func (t *pgTx) JoinRequests(app, group string) ([]*storagev1.GroupJoinRequestRecord, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	return getAll(t, "join_requests", app+"/"+group, func() *storagev1.GroupJoinRequestRecord { return &storagev1.GroupJoinRequestRecord{} },
		"SELECT record FROM join_requests WHERE app_id = $1 AND group_id = $2 ORDER BY identity", app, group)
}

func newInvitationRecord() *storagev1.GroupInvitationRecord {
	return &storagev1.GroupInvitationRecord{}
}

func (t *pgTx) Invitation(app, group, invitee string) (*storagev1.GroupInvitationRecord, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	return getOne(t, "invitations", invitee, newInvitationRecord(),
		"SELECT record FROM invitations WHERE app_id = $1 AND group_id = $2 AND invitee = $3", app, group, invitee)
}

func (t *pgTx) PutInvitation(app string, inv *storagev1.GroupInvitationRecord) error {
	return t.put(app, inv.GetGroupId(), inv, `INSERT INTO invitations (app_id, group_id, invitee, expires_ns, record) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (app_id, group_id, invitee) DO UPDATE SET expires_ns = EXCLUDED.expires_ns, record = EXCLUDED.record`,
		inv.GetInvitee(), nanos(inv.GetExpiresAt().AsTime()))
}

func (t *pgTx) DeleteInvitation(app, group, invitee string) error {
	return t.exec(app, group, "DELETE FROM invitations WHERE app_id = $1 AND group_id = $2 AND invitee = $3", invitee)
}

func (t *pgTx) Invitations(app, group string) ([]*storagev1.GroupInvitationRecord, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	return getAll(t, "invitations", app+"/"+group, newInvitationRecord,
		"SELECT record FROM invitations WHERE app_id = $1 AND group_id = $2 ORDER BY invitee", app, group)
}

func (t *pgTx) InviteeInvitations(app, invitee string) ([]*storagev1.GroupInvitationRecord, error) {
	return getAll(t, "invitations", app+"/"+invitee, newInvitationRecord,
		"SELECT record FROM invitations WHERE app_id = $1 AND invitee = $2 ORDER BY group_id", app, invitee)
}

func (t *pgTx) Epoch(app, group string, epoch uint64) (*storagev1.GroupEpochRecord, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	e, err := pgInt("epoch", epoch)
	if err != nil {
		return nil, nil // no stored epoch is that high
	}
	return getOne(t, "epochs", epoch, &storagev1.GroupEpochRecord{},
		"SELECT record FROM epochs WHERE app_id = $1 AND group_id = $2 AND epoch = $3", app, group, e)
}

func (t *pgTx) PutEpoch(app, group string, e *storagev1.GroupEpochRecord) error {
	epoch, err := pgInt("epoch", e.GetEpoch())
	if err != nil {
		return err
	}
	return t.put(app, group, e, `INSERT INTO epochs (app_id, group_id, epoch, record) VALUES ($1, $2, $3, $4)
		ON CONFLICT (app_id, group_id, epoch) DO UPDATE SET record = EXCLUDED.record`, epoch)
}

func (t *pgTx) PutStatement(app, group string, r *storagev1.GroupStatementRecord) error {
	seq, err := pgInt("statement sequence", r.GetSequence())
	if err != nil {
		return err
	}
	return t.put(app, group, r, `INSERT INTO statements (app_id, group_id, sequence, record) VALUES ($1, $2, $3, $4)
		ON CONFLICT (app_id, group_id, sequence) DO UPDATE SET record = EXCLUDED.record`, seq)
}

func (t *pgTx) Statements(app, group string, after uint64, fn func(*storagev1.GroupStatementRecord) (bool, error)) error {
	if err := t.lock(app, group); err != nil {
		return err
	}
	from, err := pgInt("statement sequence", after)
	if err != nil {
		return nil // none is above
	}
	return scanPages(t, "statements", `SELECT sequence, record FROM statements WHERE app_id = $1 AND group_id = $2 AND sequence > $3
		ORDER BY sequence LIMIT $4`, []any{app, group}, from, func() *storagev1.GroupStatementRecord { return &storagev1.GroupStatementRecord{} }, fn)
}

func (t *pgTx) EpochKey(app, group, identity string, epoch uint64) (*storagev1.GroupEpochKeyRecord, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	e, err := pgInt("epoch", epoch)
	if err != nil {
		return nil, nil // no stored key is of an epoch that high
	}
	return getOne(t, "epoch_keys", identity, &storagev1.GroupEpochKeyRecord{},
		"SELECT record FROM epoch_keys WHERE app_id = $1 AND group_id = $2 AND identity = $3 AND epoch = $4", app, group, identity, e)
}

func (t *pgTx) PutEpochKey(app, group, identity string, k *storagev1.GroupEpochKeyRecord) error {
	epoch, err := pgInt("epoch", k.GetEpoch())
	if err != nil {
		return err
	}
	return t.put(app, group, k, `INSERT INTO epoch_keys (app_id, group_id, identity, epoch, record) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (app_id, group_id, identity, epoch) DO UPDATE SET record = EXCLUDED.record`, identity, epoch)
}

func (t *pgTx) EpochKeys(app, group, identity string, after uint64, fn func(*storagev1.GroupEpochKeyRecord) (bool, error)) error {
	if err := t.lock(app, group); err != nil {
		return err
	}
	from, err := pgInt("epoch", after)
	if err != nil {
		return nil // none is above
	}
	return scanPages(t, "epoch_keys", `SELECT epoch, record FROM epoch_keys WHERE app_id = $1 AND group_id = $2 AND identity = $3 AND epoch > $4
		ORDER BY epoch LIMIT $5`, []any{app, group, identity}, from, func() *storagev1.GroupEpochKeyRecord { return &storagev1.GroupEpochKeyRecord{} }, fn)
}

func (t *pgTx) Upload(app, group, owner string) (*storagev1.GroupUploadRecord, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	return getOne(t, "uploads", owner, &storagev1.GroupUploadRecord{},
		"SELECT record FROM uploads WHERE app_id = $1 AND group_id = $2 AND owner = $3", app, group, owner)
}

func (t *pgTx) PutUpload(app, group string, u *storagev1.GroupUploadRecord) error {
	return t.put(app, group, u, `INSERT INTO uploads (app_id, group_id, owner, upload_id, expires_ns, record) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (app_id, group_id, owner) DO UPDATE SET upload_id = EXCLUDED.upload_id, expires_ns = EXCLUDED.expires_ns, record = EXCLUDED.record`,
		u.GetOwner(), u.GetUploadId(), nanos(u.GetExpiresAt().AsTime()))
}

func (t *pgTx) DeleteUpload(app, group, owner string) error {
	return t.exec(app, group, `WITH gone AS (DELETE FROM uploads WHERE app_id = $1 AND group_id = $2 AND owner = $3 RETURNING upload_id)
		DELETE FROM upload_keys WHERE upload_id IN (SELECT upload_id FROM gone)`, owner)
}

// StagedKey and the other methods of an upload's keys take no lock: the service reaches
// them through the upload, whose group is locked.
func (t *pgTx) StagedKey(uploadID, identity string) (*storagev1.GroupStagedKeyRecord, error) {
	return getOne(t, "upload_keys", identity, &storagev1.GroupStagedKeyRecord{},
		"SELECT record FROM upload_keys WHERE upload_id = $1 AND identity = $2", uploadID, identity)
}

func (t *pgTx) PutStagedKey(uploadID string, k *storagev1.GroupStagedKeyRecord) error {
	if err := t.writing(); err != nil {
		return err
	}
	rec, err := pgEncode(k)
	if err != nil {
		return err
	}
	_, err = t.tx.Exec(t.ctx, `INSERT INTO upload_keys (upload_id, identity, record) VALUES ($1, $2, $3)
		ON CONFLICT (upload_id, identity) DO UPDATE SET record = EXCLUDED.record`, uploadID, k.GetIdentity(), rec)
	return err
}

func (t *pgTx) StagedKeys(uploadID string) ([]*storagev1.GroupStagedKeyRecord, error) {
	return getAll(t, "upload_keys", uploadID, func() *storagev1.GroupStagedKeyRecord { return &storagev1.GroupStagedKeyRecord{} },
		"SELECT record FROM upload_keys WHERE upload_id = $1 ORDER BY identity", uploadID)
}

func (t *pgTx) ExpiredUploads(now time.Time, limit int) ([][3]string, error) {
	rows, err := t.tx.Query(t.ctx, `SELECT app_id, group_id, owner FROM uploads WHERE expires_ns <= $1
		ORDER BY app_id, group_id, owner LIMIT $2`, nanos(now), limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) ([3]string, error) {
		var u [3]string
		err := r.Scan(&u[0], &u[1], &u[2])
		return u, err
	})
}

func (t *pgTx) SetRotationDue(app, group string, old, at time.Time) error {
	if !old.IsZero() {
		if err := t.exec(app, group, "DELETE FROM rotation_due WHERE app_id = $1 AND group_id = $2 AND due_ns = $3", nanos(old)); err != nil {
			return err
		}
	}
	if at.IsZero() {
		return t.lock(app, group)
	}
	return t.exec(app, group, "INSERT INTO rotation_due (app_id, group_id, due_ns) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", nanos(at))
}

func (t *pgTx) DueGroups(now time.Time, limit int) ([]DueEntry, error) {
	rows, err := t.tx.Query(t.ctx, `SELECT due_ns, app_id, group_id FROM rotation_due WHERE due_ns <= $1
		ORDER BY due_ns, app_id, group_id LIMIT $2`, nanos(now), limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DueEntry, error) {
		var at int64
		var d DueEntry
		err := r.Scan(&at, &d.App, &d.Group)
		d.At = time.Unix(0, at)
		return d, err
	})
}

// deleteGroupQueries remove everything kept for a group but its row; the first
// argument is the app, the second the group.
var deleteGroupQueries = []string{
	`WITH gone AS (DELETE FROM uploads WHERE app_id = $1 AND group_id = $2 RETURNING upload_id)
		DELETE FROM upload_keys WHERE upload_id IN (SELECT upload_id FROM gone)`,
	"DELETE FROM members WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM epoch_keys WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM invitations WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM bans WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM join_requests WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM epochs WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM statements WHERE app_id = $1 AND group_id = $2",
	"DELETE FROM rotation_due WHERE app_id = $1 AND group_id = $2",
}

func (t *pgTx) DeleteGroupData(g *storagev1.GroupRecord) error {
	app, group := g.GetAppId(), g.GetGroupId()
	for _, q := range deleteGroupQueries {
		if err := t.exec(app, group, q); err != nil {
			return err
		}
	}
	if err := t.exec(app, group, "DELETE FROM groups WHERE app_id = $1 AND group_id = $2"); err != nil {
		return err
	}
	t.w.groups[groupRef{app, group}] = &lockedGroup{absent: true}
	return nil
}

func (t *pgTx) AppendOutbox(r *storagev1.GroupOutboxRecord) error {
	if err := t.writing(); err != nil {
		return err
	}
	// The sequence is the column's: the record is stored without it.
	rec := proto.Clone(r).(*storagev1.GroupOutboxRecord)
	rec.Sequence = 0
	b, err := pgEncode(rec)
	if err != nil {
		return err
	}
	var seq int64
	if err := t.tx.QueryRow(t.ctx, "INSERT INTO outbox (record) VALUES ($1) RETURNING sequence", b).Scan(&seq); err != nil {
		return err
	}
	r.Sequence = uint64(seq)
	t.wroteEvents = true
	return nil
}

func (t *pgTx) Outbox(limit int) ([]*storagev1.GroupOutboxRecord, error) {
	rows, err := t.tx.Query(t.ctx, "SELECT sequence, record FROM outbox ORDER BY sequence LIMIT $1", limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*storagev1.GroupOutboxRecord
	for rows.Next() {
		var seq int64
		var b []byte
		if err := rows.Scan(&seq, &b); err != nil {
			return nil, err
		}
		r := &storagev1.GroupOutboxRecord{}
		if err := pgDecode("outbox", seq, b, r); err != nil {
			return nil, err
		}
		r.Sequence = uint64(seq)
		out = append(out, r)
	}
	return out, rows.Err()
}

func (t *pgTx) DeleteOutbox(seq uint64) error {
	if err := t.writing(); err != nil {
		return err
	}
	s, err := pgInt("outbox sequence", seq)
	if err != nil {
		return nil // no record has it
	}
	_, err = t.tx.Exec(t.ctx, "DELETE FROM outbox WHERE sequence = $1", s)
	return err
}

// CardCursor, in a write transaction, locks the cursor until the transaction ends: of
// two followers applying the same page, the second reads the cursor the first moved
// (and so applies nothing).
func (t *pgTx) CardCursor() (uint64, error) {
	query := "SELECT sequence FROM card_cursor"
	if t.w != nil {
		if t.wouldWait {
			return 0, errWouldWait
		}
		query += " FOR UPDATE"
	}
	var seq int64
	if err := t.tx.QueryRow(t.ctx, query).Scan(&seq); err != nil {
		return 0, err
	}
	return uint64(seq), nil
}

func (t *pgTx) SetCardCursor(seq uint64) error {
	if err := t.writing(); err != nil {
		return err
	}
	s, err := pgInt("card cursor", seq)
	if err != nil {
		return err
	}
	_, err = t.tx.Exec(t.ctx, "UPDATE card_cursor SET sequence = $1", s)
	return err
}

func (t *pgTx) StaleInvitations(before time.Time, limit int) ([]*storagev1.GroupInvitationRecord, []string, error) {
	rows, err := t.tx.Query(t.ctx, `SELECT app_id, record FROM invitations WHERE expires_ns < $1
		ORDER BY expires_ns, app_id, group_id, invitee LIMIT $2`, nanos(before), limit)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var out []*storagev1.GroupInvitationRecord
	var apps []string
	for rows.Next() {
		var app string
		var b []byte
		if err := rows.Scan(&app, &b); err != nil {
			return nil, nil, err
		}
		inv := newInvitationRecord()
		if err := pgDecode("invitations", app, b, inv); err != nil {
			return nil, nil, err
		}
		out, apps = append(out, inv), append(apps, app)
	}
	return out, apps, rows.Err()
}

// boundedTx is a transaction whose every statement must answer within
// pgdb.DefaultOpTimeout (the transaction as a whole, within TxTimeout).
type boundedTx struct{ tx pgx.Tx }

func statementContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, pgdb.DefaultOpTimeout)
}

func (b boundedTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	ctx, cancel := statementContext(ctx)
	defer cancel()
	return b.tx.Exec(ctx, sql, args...)
}

// Query returns rows whose statement's time ends when they are closed.
func (b boundedTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	ctx, cancel := statementContext(ctx)
	rows, err := b.tx.Query(ctx, sql, args...)
	if err != nil {
		cancel()
		return nil, err
	}
	return &boundedRows{Rows: rows, cancel: cancel}, nil
}

func (b boundedTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	ctx, cancel := statementContext(ctx)
	return boundedRow{row: b.tx.QueryRow(ctx, sql, args...), cancel: cancel}
}

type boundedRows struct {
	pgx.Rows
	cancel context.CancelFunc
}

func (r *boundedRows) Close() {
	r.Rows.Close()
	r.cancel()
}

type boundedRow struct {
	row    pgx.Row
	cancel context.CancelFunc
}

func (r boundedRow) Scan(dest ...any) error {
	defer r.cancel()
	return r.row.Scan(dest...)
}
