package messaging

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// Live delivery across replicas. A subscriber's stream runs on one replica and the
// message it waits for may be stored by another: the batch that stores it notifies
// (pg_notify, once it has committed, in a transaction of its own: a notification in the
// batch's transaction would hold PostgreSQL's lock on the notification queue through
// the commit's flush, so that two replicas' commits could never be flushed together)
// the inboxes that grew, and every
// replica listens on a connection of its own (WaitForNotification) and wakes the
// streams of those inboxes. A notification is only a wake-up: the stream reads the
// items from the tables, from its own cursor, so a notification lost (a listening
// connection that broke, a replica that started listening late) only delays, and Watch
// re-reads the heads of the watched inboxes every WatchPoll besides.

// inboxChannel is the channel of the wake-ups, one per database (PostgreSQL's
// notifications do not cross databases).
const inboxChannel = "umbra_messaging_inbox"

// maxNotifyBytes bounds a notification's payload (PostgreSQL's limit is 8000 bytes): a
// batch whose grown inboxes do not fit says "all", and the listeners re-read the heads
// of every inbox they watch.
const maxNotifyBytes = 7000

// wakeUp is a notification's payload. From names the store that sent it (a replica
// skips its own: its committer has woken its streams already); Heads are [app,
// identity, head] triples.
type wakeUp struct {
	From  string  `json:"f"`
	Heads [][]any `json:"h,omitempty"`
	All   bool    `json:"a,omitempty"`
}

// newStoreID returns a random name for a store, for its notifications.
func newStoreID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// notifyPayload is the wake-up for the inboxes a batch made grow.
func notifyPayload(from string, grown []*pgInbox) string {
	w := wakeUp{From: from}
	size := 0
	for _, in := range grown {
		size += len(in.app) + len(in.identity) + 32
		if size > maxNotifyBytes {
			w.Heads, w.All = nil, true
			break
		}
		w.Heads = append(w.Heads, []any{in.app, in.identity, in.head})
	}
	b, _ := json.Marshal(w) // strings and numbers
	return string(b)
}

// Watch implements Store: it listens for the wake-ups of every replica's batches, and
// re-reads the heads of the inboxes watching names every WatchPoll and whenever it
// (re)starts listening. A broken connection is reopened, with a growing pause.
func (s *PostgresStore) Watch(ctx context.Context, watching func() []InboxHead, changed func([]InboxHead)) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	pause := 100 * time.Millisecond
	failing := false
	for ctx.Err() == nil {
		if conn == nil {
			c, err := s.listen(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if !failing {
					s.log.Warn("cannot listen for other replicas' wake-ups; streams learn of their messages by polling meanwhile", zap.Error(err))
					failing = true
				}
				s.pollHeads(ctx, watching, changed)
				select {
				case <-ctx.Done():
					return
				case <-time.After(pause):
				}
				pause = min(2*pause, s.poll)
				continue
			}
			if failing {
				s.log.Info("listening for other replicas' wake-ups again")
			}
			conn, pause, failing = c, 100*time.Millisecond, false
			s.pollHeads(ctx, watching, changed) // what came while nobody listened
		}
		wait, cancel := context.WithTimeout(ctx, s.poll)
		n, err := conn.WaitForNotification(wait)
		cancel()
		switch {
		case err == nil:
			payloads, err := s.coalesce(ctx, conn, n.Payload)
			s.wokenUp(ctx, payloads, watching, changed)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("the connection listening for other replicas' wake-ups broke; reconnecting", zap.Error(err))
				conn.Close(context.WithoutCancel(ctx))
				conn, failing = nil, true
			}
		case ctx.Err() != nil:
			return
		case errors.Is(err, context.DeadlineExceeded):
			// Quiet for a poll: the connection may be to a server that stopped
			// answering without closing it (a host frozen or cut off, the old
			// primary of a failover), on which nothing would ever arrive again.
			if err := s.alive(ctx, conn); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("the connection listening for other replicas' wake-ups does not answer; reconnecting", zap.Error(err))
				conn.Close(context.WithoutCancel(ctx))
				conn, failing = nil, true
				continue
			}
			s.pollHeads(ctx, watching, changed)
		default:
			s.log.Warn("the connection listening for other replicas' wake-ups broke; reconnecting", zap.Error(err))
			conn.Close(context.WithoutCancel(ctx))
			conn, failing = nil, true
		}
	}
}

// listenPing bounds the ping of a quiet listening connection (alive).
const listenPing = 2 * time.Second

// alive pings the listening connection. A notification that arrives meanwhile is kept
// by the connection for the next WaitForNotification.
func (s *PostgresStore) alive(ctx context.Context, conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, listenPing)
	defer cancel()
	return conn.Ping(ctx)
}

// listen takes a connection of its own out of the pool and listens on it.
func (s *PostgresStore) listen(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	pc, err := s.db.Pool.Acquire(ctx)
	if err != nil {
		return nil, s.db.Err(err)
	}
	conn := pc.Hijack()
	if _, err := conn.Exec(ctx, "LISTEN "+inboxChannel); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, s.db.Err(err)
	}
	s.listening.Add(1)
	return conn, nil
}

// Wake-ups that arrive within wakeCoalesce of one another (at most wakeMerge of them)
// are handled together: one read of the new items for all of them.
const (
	wakeCoalesce = 2 * time.Millisecond
	wakeMerge    = 64
)

// coalesce returns first and the notifications that follow it within wakeCoalesce.
// An error is the connection's: the payloads gathered are still to be handled.
func (s *PostgresStore) coalesce(ctx context.Context, conn *pgx.Conn, first string) ([]string, error) {
	payloads := []string{first}
	until := time.Now().Add(wakeCoalesce)
	for len(payloads) < wakeMerge {
		wait, cancel := context.WithDeadline(ctx, until)
		n, err := conn.WaitForNotification(wait)
		cancel()
		switch {
		case err == nil:
			payloads = append(payloads, n.Payload)
		case ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
			return payloads, nil
		default:
			return payloads, err
		}
	}
	return payloads, nil
}

// wokenUp handles notifications: the inboxes they name, each at the highest head
// named, with their new items.
func (s *PostgresStore) wokenUp(ctx context.Context, payloads []string, watching func() []InboxHead, changed func([]InboxHead)) {
	var heads []InboxHead
	at := map[[2]string]int{} // index in heads
	for _, payload := range payloads {
		var w wakeUp
		if err := json.Unmarshal([]byte(payload), &w); err != nil {
			s.log.Warn("a wake-up that does not parse; re-reading the watched inboxes", zap.Error(err))
			s.pollHeads(ctx, watching, changed)
			return
		}
		if w.From == s.id {
			continue
		}
		if w.All {
			s.pollHeads(ctx, watching, changed)
			return
		}
		for _, h := range w.Heads {
			if len(h) != 3 {
				continue
			}
			app, ok1 := h[0].(string)
			id, ok2 := h[1].(string)
			head, ok3 := h[2].(float64)
			if !ok1 || !ok2 || !ok3 || head < 0 {
				continue
			}
			k := [2]string{app, id}
			if i, ok := at[k]; ok {
				heads[i].Head = max(heads[i].Head, uint64(head))
				continue
			}
			at[k] = len(heads)
			heads = append(heads, InboxHead{AppID: app, Identity: id, Head: uint64(head)})
		}
	}
	if len(heads) == 0 {
		return
	}
	if heads = s.withItems(ctx, heads, watching()); len(heads) > 0 {
		changed(heads)
	}
}

// Bounds of the items a wake-up reads for the streams it wakes (withItems): per inbox
// as many as the notifier keeps (recentItems), and wakeBytes of envelopes and payloads
// for all inboxes of one wake-up together.
const wakeBytes = 4 << 20

// withItems keeps, of the grown inboxes heads, those that known (the inboxes this
// replica watches, with the heads it knows) has and that grew past what it knows, and
// reads in one statement the new items of those at most recentItems behind, for the
// notifier to hand to their streams from memory (one read for every stream a wake-up
// concerns, where each stream would read its own inbox). An inbox whose new items do
// not all come back (bounds reached, expired under retention, a read that failed) is
// reported without items: its streams read the store, as before.
func (s *PostgresStore) withItems(ctx context.Context, heads []InboxHead, known []InboxHead) []InboxHead {
	at := make(map[[2]string]uint64, len(known))
	for _, h := range known {
		at[[2]string{h.AppID, h.Identity}] = h.Head
	}
	kept := heads[:0]
	var apps, ids []string
	var froms, tos []int64
	var read []int // of kept
	for _, h := range heads {
		from, ok := at[[2]string{h.AppID, h.Identity}]
		if !ok || h.Head <= from {
			continue // not watched here, or nothing new for its streams
		}
		if h.Head-from <= recentItems {
			read = append(read, len(kept))
			apps, ids = append(apps, h.AppID), append(ids, h.Identity)
			froms, tos = append(froms, int64(from)), append(tos, int64(h.Head))
		}
		kept = append(kept, h)
	}
	if len(read) == 0 {
		return kept
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The lookups are nested loops over the primary keys (an index scan each, the
	// partitions of the entry's expiry chosen at run time), whatever the tables' sizes
	// and the plan cached for the statement.
	rows, err := s.db.Pool.Query(ctx, `
		SELECT n, seq, CASE WHEN sum(size) OVER (ORDER BY n, seq ROWS UNBOUNDED PRECEDING) <= $5 THEN record END
		FROM (SELECT t.n, i.inbox_sequence AS seq, coalesce(m.size, e.size) AS size, coalesce(m.record, e.record) AS record
			FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) WITH ORDINALITY AS t(a, i, known, head, n)
			CROSS JOIN LATERAL (SELECT * FROM inbox
				WHERE app_id = t.a AND identity = t.i AND inbox_sequence > t.known AND inbox_sequence <= t.head AND expires_at > `+horizon+`
				ORDER BY inbox_sequence LIMIT `+fmt.Sprint(recentItems)+`) AS i
			LEFT JOIN LATERAL (SELECT size, record FROM messages
				WHERE i.conversation_id IS NOT NULL AND app_id = i.app_id AND conversation_id = i.conversation_id
					AND sequence = i.sequence AND expires_at = i.expires_at LIMIT 1) AS m ON true
			LEFT JOIN LATERAL (SELECT size, record FROM events
				WHERE i.event_id IS NOT NULL AND app_id = i.app_id AND event_id = i.event_id AND expires_at = i.expires_at LIMIT 1) AS e ON true
		) AS items
		ORDER BY n, seq`, apps, ids, froms, tos, wakeBytes)
	if err != nil {
		s.log.Debug("reading the items of a wake-up; its streams read their own", zap.Error(err))
		return kept
	}
	items := make([][]InboxItem, len(read))
	complete := make([]bool, len(read)) // false once an item is missing
	for i := range complete {
		complete[i] = true
	}
	var n, seq int64
	var raw []byte
	_, err = pgx.ForEachRow(rows, []any{&n, &seq, &raw}, func() error {
		j := int(n) - 1
		if j < 0 || j >= len(read) || !complete[j] {
			return nil
		}
		want := froms[j] + int64(len(items[j])) + 1
		rec := &messagingstoragev1.MessagingLogRecord{}
		if seq != want || raw == nil || proto.Unmarshal(raw, rec) != nil || rec.GetAppId() != apps[j] {
			complete[j], items[j] = false, nil // the stream reads the store, which says what is wrong
			return nil
		}
		items[j] = append(items[j], InboxItem{Sequence: uint64(seq), Record: rec})
		return nil
	})
	if err != nil {
		s.log.Debug("reading the items of a wake-up; its streams read their own", zap.Error(err))
		return kept
	}
	for j, k := range read {
		if complete[j] && int64(len(items[j])) == tos[j]-froms[j] {
			kept[k].Items = items[j]
		}
	}
	return kept
}

// pollHeads re-reads the heads of the watched inboxes and reports those past what the
// caller knows.
func (s *PostgresStore) pollHeads(ctx context.Context, watching func() []InboxHead, changed func([]InboxHead)) {
	known := watching()
	if len(known) == 0 {
		return
	}
	apps, ids, heads := make([]string, len(known)), make([]string, len(known)), make([]int64, len(known))
	for i, h := range known {
		apps[i], ids[i], heads[i] = h.AppID, h.Identity, int64(h.Head)
	}
	ctx, cancel := context.WithTimeout(ctx, s.poll+5*time.Second)
	defer cancel()
	rows, err := s.db.Pool.Query(ctx, `SELECT h.app_id, h.identity, h.head FROM inbox_heads h
		JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS t(a, i, known) ON h.app_id = t.a AND h.identity = t.i
		WHERE h.head > t.known`, apps, ids, heads)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Debug("re-reading the watched inboxes' heads", zap.Error(err))
		}
		return
	}
	var grown []InboxHead
	var app, id string
	var head int64
	if _, err := pgx.ForEachRow(rows, []any{&app, &id, &head}, func() error {
		grown = append(grown, InboxHead{AppID: app, Identity: id, Head: uint64(head)})
		return nil
	}); err != nil {
		return
	}
	if len(grown) > 0 {
		changed(grown)
	}
}
