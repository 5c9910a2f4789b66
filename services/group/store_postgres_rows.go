// The PostgreSQL engine's rows: records as protobuf bytes, reads of one row, of all and page by page, writes, and statements bounded in time.

package group

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// records encodes the engine's records (records.Encode); pgDecode reads them, naming a
// row by its key unquoted, as the group store always has.
var records = pgdb.Records{Store: "group", Schema: Schema}

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
	b, found, err := pgdb.GetBytes(t.ctx, t.tx, query, args...)
	if err != nil || !found {
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

// groupRow locks the group and reads the record of its row in table whose column is
// key; nil when there is none.
func groupRow[M proto.Message](t *pgTx, table, column, app, group, key string, m M) (M, error) {
	if err := t.lock(app, group); err != nil {
		var zero M
		return zero, err
	}
	return getOne(t, table, key, m, "SELECT record FROM "+table+" WHERE app_id = $1 AND group_id = $2 AND "+column+" = $3", app, group, key)
}

// groupRows locks the group and reads the records of its rows in table, in column order.
func groupRows[M proto.Message](t *pgTx, table, column, app, group string, newM func() M) ([]M, error) {
	if err := t.lock(app, group); err != nil {
		return nil, err
	}
	return getAll(t, table, app+"/"+group, newM, "SELECT record FROM "+table+" WHERE app_id = $1 AND group_id = $2 ORDER BY "+column, app, group)
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

// put writes the record m of a group's table with query, whose arguments are app,
// group, then args, then the record.
func (t *pgTx) put(app, group string, m proto.Message, query string, args ...any) error {
	if err := t.writeGroup(app, group); err != nil {
		return err
	}
	rec, err := records.Encode(m)
	if err != nil {
		return err
	}
	_, err = t.tx.Exec(t.ctx, query, append(append([]any{app, group}, args...), rec)...)
	return err
}

// putGroupRow writes m as the record of the group's row in table whose column is key.
func (t *pgTx) putGroupRow(table, column, app, group string, key any, m proto.Message) error {
	return t.put(app, group, m, "INSERT INTO "+table+" (app_id, group_id, "+column+", record) VALUES ($1, $2, $3, $4)"+
		" ON CONFLICT (app_id, group_id, "+column+") DO UPDATE SET record = EXCLUDED.record", key)
}

// exec runs a write query of the group's data, whose first arguments are app and group.
func (t *pgTx) exec(app, group, query string, args ...any) error {
	if err := t.writeGroup(app, group); err != nil {
		return err
	}
	_, err := t.tx.Exec(t.ctx, query, append([]any{app, group}, args...)...)
	return err
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
