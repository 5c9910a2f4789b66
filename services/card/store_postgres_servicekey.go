package card

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/pgdb"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The service keys in PostgreSQL: the current one, the retired ones and their rotation.

// currentServiceKey reads the current service key; found is false when there is none.
func currentServiceKey(ctx context.Context, tx pgx.Tx, lock string) (*cardstoragev1.ServiceKeyRecord, bool, error) {
	rec := &cardstoragev1.ServiceKeyRecord{}
	found, err := records.Get(ctx, tx, "service_keys", "current", rec, "SELECT record FROM service_keys WHERE current "+lock)
	return rec, found, err
}

func (s *PostgresStore) ServiceKey(candidate *cardstoragev1.ServiceKeyRecord) (*cardstoragev1.ServiceKeyRecord, error) {
	return pgdb.UpdateValue(s.db, func(ctx context.Context, tx pgx.Tx) (*cardstoragev1.ServiceKeyRecord, error) {
		// The partial unique index on current keeps the first of the keys offered.
		return pgFirstKey(candidate, "service key",
			func() (*cardstoragev1.ServiceKeyRecord, bool, error) { return currentServiceKey(ctx, tx, "") },
			func(b []byte) (pgconn.CommandTag, error) {
				return tx.Exec(ctx, "INSERT INTO service_keys (key_id, current, record) VALUES ($1, true, $2) ON CONFLICT DO NOTHING", candidate.GetKeyId(), b)
			},
			fmt.Errorf("card: service key %s was refused, and there is no current key", candidate.GetKeyId()))
	})
}

// pgFirstKey returns the key that get reads, the service key or the log's first key
// (what names it). When there is none yet it stores candidate with insert, whose ON
// CONFLICT DO NOTHING keeps one key: replicas starting together each offer a key, and
// those whose key was not kept, having waited for the first, read it (refused if there
// is still none).
func pgFirstKey[T any, M interface {
	*T
	proto.Message
}](candidate M, what string, get func() (M, bool, error), insert func([]byte) (pgconn.CommandTag, error), refused error) (M, error) {
	key, found, err := get()
	if err != nil || found {
		return key, err
	}
	if candidate == nil {
		return nil, errors.New("card: the card store has no " + what)
	}
	b, err := records.Encode(candidate)
	if err != nil {
		return nil, err
	}
	tag, err := insert(b)
	if err != nil {
		return nil, err
	}
	if tag.RowsAffected() == 1 {
		return candidate, nil
	}
	key, found, err = get()
	if err == nil && !found {
		err = refused
	}
	return key, err
}

func (s *PostgresStore) ServiceKeys() ([]*cardstoragev1.ServiceKeyRecord, error) {
	var out []*cardstoragev1.ServiceKeyRecord
	err := s.db.View(func(ctx context.Context, tx pgx.Tx) error {
		out = nil
		rows, err := tx.Query(ctx, "SELECT key_id, current, record FROM service_keys ORDER BY key_id")
		if err != nil {
			return err
		}
		defer rows.Close()
		var current *cardstoragev1.ServiceKeyRecord
		for rows.Next() {
			var id string
			var isCurrent bool
			var b []byte
			if err := rows.Scan(&id, &isCurrent, &b); err != nil {
				return err
			}
			rec := &cardstoragev1.ServiceKeyRecord{}
			if err := records.Decode("service_keys", id, b, rec); err != nil {
				return err
			}
			if isCurrent {
				current = rec
			} else {
				out = append(out, rec)
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if current == nil {
			return errs.NotFoundf("the card store has no service key")
		}
		slices.SortStableFunc(out, func(a, b *cardstoragev1.ServiceKeyRecord) int {
			return a.GetSupersededAt().AsTime().Compare(b.GetSupersededAt().AsTime())
		})
		out = append(out, current)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// nanosTime is a latest_published_ns as a time.
func nanosTime(ns int64) time.Time {
	if ns == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

func (s *PostgresStore) RotateServiceKey(next *cardstoragev1.ServiceKeyRecord, at time.Time) (*cardstoragev1.ServiceKeyRecord, error) {
	var retired *cardstoragev1.ServiceKeyRecord
	err := s.db.Update(func(ctx context.Context, tx pgx.Tx) error {
		// The feed's lock first, as publications take it: no card is being published
		// with the key being retired, and none was at a later time than at.
		events, err := lockEvents(ctx, tx)
		if err != nil {
			return err
		}
		current, found, err := currentServiceKey(ctx, tx, "FOR UPDATE")
		if err != nil {
			return err
		}
		if !found {
			return errs.NotFoundf("the card store has no service key to rotate")
		}
		if retired, err = rotateServiceKey(current, next, at, nanosTime(events.latestPublished)); err != nil {
			return err
		}
		rb, err := records.Encode(retired)
		if err != nil {
			return err
		}
		nb, err := records.Encode(next)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE service_keys SET current = false, record = $2 WHERE key_id = $1", current.GetKeyId(), rb); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "INSERT INTO service_keys (key_id, current, record) VALUES ($1, true, $2)", next.GetKeyId(), nb)
		return err
	})
	if err != nil {
		return nil, err
	}
	return retired, nil
}
