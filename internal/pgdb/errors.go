package pgdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/umbra-e2ee/umbra/pkg/errs"
)

// kindError is one of pkg/errs's kinds with the PostgreSQL error behind it: the
// caller reads the kind's message (no host name or SQL in it), and errors.As still
// finds the cause for a log.
type kindError struct {
	kind  *errs.Error
	cause error
}

func (e *kindError) Error() string   { return e.kind.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.cause} }

func (db *DB) unavailable(cause error, format string, args ...any) error {
	return &kindError{kind: errs.Unavailablef("the %s service's database is unavailable: %s", db.store, fmt.Sprintf(format, args...)), cause: cause}
}

// Err maps an error of a query or a transaction to the kinds of pkg/errs:
//
//   - one of pkg/errs's kinds (a store's own ErrNotFound...) is returned as it is;
//   - a database that cannot be reached, or is shutting down, starting, out of
//     connections, a read-only standby (after a failover), or that does not answer
//     within the operation's time: ErrUnavailable (the request may be retried);
//   - disk full (53100): ErrStorageFull, as bbolt's ENOSPC;
//   - data_corrupted, index_corrupted: ErrDamaged;
//   - serialization_failure and deadlock_detected, which InTx retries: ErrUnavailable
//     once its attempts are spent;
//   - anything else, a unique_violation among them unless the caller made it
//     ErrExists (IsUniqueViolation): an internal error, logged with its cause.
func (db *DB) Err(err error) error {
	if err == nil {
		return nil
	}
	if isKind(err) {
		return err
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch {
		case pg.Code == "53100":
			return &kindError{kind: errs.StorageFullf("%s", errs.StorageFullMessage), cause: err}
		case pg.Code == "XX001" || pg.Code == "XX002":
			return &kindError{kind: errs.Damagedf("%s store: %s", db.store, pg.Message), cause: err}
		case Retryable(err):
			return db.unavailable(err, "the transaction was aborted for a concurrent one; retry")
		case strings.HasPrefix(pg.Code, "08"), // connection_exception
			pg.Code == "57P01", pg.Code == "57P02", pg.Code == "57P03", // admin_shutdown, crash_shutdown, cannot_connect_now
			pg.Code == "57014",                                         // query_canceled (statement_timeout)
			pg.Code == "53000", pg.Code == "53200", pg.Code == "53300", // insufficient_resources, out_of_memory, too_many_connections
			pg.Code == "25006",               // read_only_sql_transaction: a standby
			strings.HasPrefix(pg.Code, "58"): // system_error: I/O
			if strings.HasPrefix(pg.Code, "08") || pg.Code == "57P01" || pg.Code == "57P02" || pg.Code == "25006" {
				db.lost() // the server went away or is no longer the primary
			}
			return db.unavailable(err, "%s (SQLSTATE %s)", pg.Message, pg.Code)
		}
		return fmt.Errorf("%s store: %w", db.store, err)
	}
	if errors.Is(err, context.Canceled) {
		return err // the caller went away
	}
	if connectionFailure(err) {
		if connectionLost(err) {
			db.lost()
		}
		return db.unavailable(err, "it cannot be reached")
	}
	return fmt.Errorf("%s store: %w", db.store, err)
}

// connectionFailure reports whether err, not from the server, is one of reaching it:
// a refused or broken connection, a timeout, a closed pool.
func connectionFailure(err error) bool {
	var connect *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connect), errors.As(err, &netErr),
		errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err), pgconn.SafeToRetry(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	}
	// pgx says "conn closed" of a connection the server or the network closed, and
	// puddle "closed pool" of a pool closed while the request waited.
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "closed pool")
}

// connectionLost reports whether err is the failure of a connection that was
// established (broken, or silent past the operation's timeout), as opposed to one that
// could not be made or a wait for one (a bare context deadline).
func connectionLost(err error) bool {
	var connect *pgconn.ConnectError
	if errors.As(err, &connect) {
		return false
	}
	switch {
	case pgconn.Timeout(err), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	}
	return strings.Contains(err.Error(), "conn closed")
}

// kinds are pkg/errs's sentinels, which a store may return bare (errs.ErrNotFound).
var kinds = []error{errs.ErrInvalid, errs.ErrNotFound, errs.ErrExists, errs.ErrPermission, errs.ErrUnauthenticated,
	errs.ErrConflict, errs.ErrPrecondition, errs.ErrExhausted, errs.ErrUnavailable, errs.ErrTooLarge,
	errs.ErrStorageFull, errs.ErrDamaged}

// isKind reports whether err is one of pkg/errs's kinds, made with its constructors or
// bare.
func isKind(err error) bool {
	var kind *errs.Error
	if errors.As(err, &kind) {
		return true
	}
	for _, k := range kinds {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}
