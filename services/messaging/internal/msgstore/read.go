package msgstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/refusal"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// Every read copies the memIndex's state first and opens its transaction after. A flush
// that commits in between has then written entries the copy still holds as pending, and
// the reader takes them from the copy; the other order could miss entries that the copy
// no longer holds and the transaction does not hold yet.

// seqSource walks a sequence-keyed index range (one conversation's messages, or one
// inbox): sequences below first from the bucket, and first, first+1... from pending.
type seqSource struct {
	b       *bolt.Bucket
	prefix  string
	first   uint64
	pending []uint64
}

// visit is called with each sequence and its log position, until it returns false.
type visit func(seq, pos uint64) (bool, error)

func (s seqSource) forward(from uint64, fn visit) error {
	if from < s.first {
		pfx := []byte(s.prefix + "\x00")
		c := s.b.Cursor()
		for k, v := c.Seek(seqKey(s.prefix, from)); k != nil && bytes.HasPrefix(k, pfx); k, v = c.Next() {
			seq, pos, err := seqEntry(k[len(pfx):], v)
			if err != nil {
				return err
			}
			if seq >= s.first {
				break
			}
			if more, err := fn(seq, pos); !more || err != nil {
				return err
			}
		}
	}
	for i, pos := range s.pending {
		seq := s.first + uint64(i)
		if seq < from {
			continue
		}
		if more, err := fn(seq, pos); !more || err != nil {
			return err
		}
	}
	return nil
}

// backward visits the sequences at or below from, newest first.
func (s seqSource) backward(from uint64, fn visit) error {
	for i := len(s.pending) - 1; i >= 0; i-- {
		seq := s.first + uint64(i)
		if seq > from {
			continue
		}
		if more, err := fn(seq, s.pending[i]); !more || err != nil {
			return err
		}
	}
	top := min(from, s.first-1)
	if top == 0 {
		return nil
	}
	pfx := []byte(s.prefix + "\x00")
	c := s.b.Cursor()
	k, v := c.Seek(seqKey(s.prefix, top))
	switch {
	case k == nil:
		k, v = c.Last()
	case !bytes.Equal(k, seqKey(s.prefix, top)):
		k, v = c.Prev()
	}
	for ; k != nil && bytes.HasPrefix(k, pfx); k, v = c.Prev() {
		seq, pos, err := seqEntry(k[len(pfx):], v)
		if err != nil {
			return err
		}
		if more, err := fn(seq, pos); !more || err != nil {
			return err
		}
	}
	return nil
}

// at returns the log position of one sequence.
func (s seqSource) at(seq uint64) (uint64, bool, error) {
	if seq >= s.first {
		if i := seq - s.first; i < uint64(len(s.pending)) {
			return s.pending[i], true, nil
		}
		return 0, false, nil
	}
	v := s.b.Get(seqKey(s.prefix, seq))
	if v == nil {
		return 0, false, nil
	}
	pos, err := boltdb.ParseU64(v)
	return pos, err == nil, err
}

func seqEntry(k, v []byte) (seq, pos uint64, err error) {
	if len(k) != 8 || len(v) != 8 {
		return 0, 0, fmt.Errorf("index entry of %d and %d bytes, want 8 and 8", len(k), len(v))
	}
	return binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(v), nil
}

// readEntry reads the log entry at pos (without a fan-out kept in the fanout bucket);
// nil if it was swept. A record that fails its checksum is an error wrapping
// errs.ErrDamaged.
func readEntry(tx *bolt.Tx, pos uint64) (*messagingstoragev1.MessagingLogRecord, error) {
	log := tx.Bucket(bucketLog)
	k := boltdb.U64(pos)
	v := log.Get(k)
	if v == nil {
		return nil, nil
	}
	rec := &messagingstoragev1.MessagingLogRecord{}
	if err := boltdb.DecodeProto(log, k, v, rec); err != nil {
		return nil, fmt.Errorf("messaging: store: log entry %d: %w", pos, err)
	}
	return rec, nil
}

// indexDamaged reports an index entry that points at a log entry that is not what the
// index says: index entries carry no checksum, so this is how their damage shows.
func (s *BoltStore) indexDamaged(bucket []byte, key string, pos uint64, what string) error {
	return errs.Damagedf("%s: the index entry at key %q in bucket %q points at log entry %d, which %s", s.db.Path(), key, bucket, pos, what)
}

// isMessage reports whether rec is message seq of conversation conv of app.
func isMessage(rec *messagingstoragev1.MessagingLogRecord, app, conv string, seq uint64) bool {
	m := rec.GetMessage()
	return rec.GetAppId() == app && m.GetConversationId() == conv && m.GetSequence() == seq
}

// isInboxItem reports whether rec can be item seq of identity's inbox in app: its app
// matches and, when its fan-out is in the record (direct messages, small groups), the
// fan-out gives identity that inbox sequence. A larger fan-out is in the fanout bucket
// and is not read for this check.
func isInboxItem(rec *messagingstoragev1.MessagingLogRecord, app, identity string, seq uint64) bool {
	if rec.GetAppId() != app {
		return false
	}
	fan := rec.GetFanout()
	if fan == nil {
		return true
	}
	i, found := slices.BinarySearch(fan.GetRecipients(), identity)
	return found && i < len(fan.GetInboxSequences()) && fan.GetInboxSequences()[i] == seq
}

// Sent implements messaging.Store.
func (s *BoltStore) Sent(app, sender, cmid string) (*messagingstoragev1.MessagingLogRecord, error) {
	key := key3(app, sender, cmid)
	s.mem.mu.RLock()
	pos, pending := s.mem.idem[key]
	s.mem.mu.RUnlock()
	var rec *messagingstoragev1.MessagingLogRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		if !pending {
			v := tx.Bucket(bucketIdempotency).Get([]byte(key))
			if v == nil {
				return nil
			}
			var err error
			if pos, err = boltdb.ParseU64(v); err != nil {
				return err
			}
		}
		var err error
		if rec, err = readEntry(tx, pos); err == nil && rec != nil &&
			(rec.GetAppId() != app || rec.GetMessage().GetSender() != sender || rec.GetMessage().GetClientMessageId() != cmid) {
			err = s.indexDamaged(bucketIdempotency, key, pos, "is not this sender's message with this client_message_id")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if rec.GetMessage() == nil {
		return nil, errs.NotFoundf("no message with client_message_id %q", refusal.Truncate(cmid))
	}
	return rec, nil
}

// Conversation implements messaging.Store.
func (s *BoltStore) Conversation(app, conv string) (*messagingstoragev1.ConversationRecord, error) {
	key := key2(app, conv)
	if v, ok := s.mem.conv(key); ok {
		return v.state.record(), nil
	}
	rec := &messagingstoragev1.ConversationRecord{}
	if err := s.get(bucketConversations, key, rec, "conversation %s not found", conv); err != nil {
		return nil, err
	}
	return rec, nil
}

// messageSource returns the source of a conversation's messages and its latest
// sequence; ok is false for a conversation that does not exist.
func messageSource(tx *bolt.Tx, key string, v convView, inMem bool) (seqSource, uint64, bool, error) {
	src := seqSource{b: tx.Bucket(bucketMessages), prefix: key, first: math.MaxUint64}
	if inMem {
		src.first, src.pending = v.first, v.pending
		return src, v.state.latest, true, nil
	}
	rec := &messagingstoragev1.ConversationRecord{}
	switch err := boltdb.GetProto(tx.Bucket(bucketConversations), []byte(key), rec); {
	case notFound(err):
		return src, 0, false, nil
	case err != nil:
		return src, 0, false, err
	}
	return src, rec.GetLatestSequence(), true, nil
}

// HasMessage implements messaging.Store.
func (s *BoltStore) HasMessage(app, conv string, seq uint64) (bool, error) {
	key := key2(app, conv)
	v, inMem := s.mem.conv(key)
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		src, _, ok, err := messageSource(tx, key, v, inMem)
		if !ok || err != nil {
			return err
		}
		_, found, err = src.at(seq)
		return err
	})
	return found, err
}

// Messages implements messaging.Store.
func (s *BoltStore) Messages(app, conv string, q MessageQuery) ([]*messagingstoragev1.MessagingLogRecord, bool, error) {
	key := key2(app, conv)
	v, inMem := s.mem.conv(key)
	var out []*messagingstoragev1.MessagingLogRecord
	more := false
	err := s.db.View(func(tx *bolt.Tx) error {
		src, latest, ok, err := messageSource(tx, key, v, inMem)
		if !ok || err != nil {
			return err
		}
		floor := uint64(1)
		if !q.NotBefore.IsZero() {
			if floor, err = firstAt(tx, src, latest, q.NotBefore); err != nil {
				return err
			}
		}
		size := 0
		fn := func(seq, pos uint64) (bool, error) {
			if seq < floor {
				return false, nil
			}
			rec, err := readEntry(tx, pos)
			if rec == nil || err != nil {
				return true, err // swept since the index was read
			}
			if !isMessage(rec, app, conv, seq) {
				return false, s.indexDamaged(bucketMessages, string(seqKey(key, seq)), pos, "is not this message")
			}
			n := len(rec.GetMessage().GetEnvelope())
			if len(out) == q.Limit || len(out) > 0 && size+n > q.MaxBytes {
				more = true
				return false, nil
			}
			out = append(out, rec)
			size += n
			return true, nil
		}
		if q.Forward {
			return src.forward(max(q.After+1, floor), fn)
		}
		if q.Before <= 1 {
			return nil
		}
		return src.backward(q.Before-1, fn)
	})
	if err != nil {
		return nil, false, err
	}
	return out, more, nil
}

// firstAt returns the first sequence stored at or after t: server times never decrease
// along a conversation, so a binary search finds it. Sequences no longer stored count
// as earlier (retention deletes the oldest first).
func firstAt(tx *bolt.Tx, src seqSource, latest uint64, t time.Time) (uint64, error) {
	var ferr error
	n := sort.Search(int(min(latest, math.MaxInt32)), func(i int) bool {
		if ferr != nil {
			return true
		}
		pos, ok, err := src.at(uint64(i) + 1)
		if err != nil || !ok {
			ferr = err
			return err != nil
		}
		rec, err := readEntry(tx, pos)
		if err != nil || rec == nil {
			ferr = err
			return err != nil
		}
		return !rec.GetMessage().GetServerTime().AsTime().Before(t)
	})
	return uint64(n) + 1, ferr
}

// Inbox implements messaging.Store.
func (s *BoltStore) Inbox(app, identity string, after uint64, limit, maxBytes int) ([]InboxItem, uint64, error) {
	key := key2(app, identity)
	v, inMem := s.mem.inbox(key, after)
	var out []InboxItem
	var head uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		src := seqSource{b: tx.Bucket(bucketInbox), prefix: key, first: math.MaxUint64}
		if inMem {
			head, src.first, src.pending = v.head, v.first, v.pending
		} else {
			var err error
			if head, err = durableHead(tx, key); err != nil {
				return err
			}
		}
		size := 0
		return src.forward(after+1, func(seq, pos uint64) (bool, error) {
			rec, err := readEntry(tx, pos)
			if rec == nil || err != nil {
				return true, err
			}
			if !isInboxItem(rec, app, identity, seq) {
				return false, s.indexDamaged(bucketInbox, string(seqKey(key, seq)), pos, "is not an item of this inbox")
			}
			n := recordSize(rec)
			if len(out) == limit || len(out) > 0 && size+n > maxBytes {
				return false, nil
			}
			out = append(out, InboxItem{Sequence: seq, Record: rec})
			size += n
			return true, nil
		})
	})
	if err != nil {
		return nil, 0, err
	}
	return out, head, nil
}

// InboxHead implements messaging.Store.
func (s *BoltStore) InboxHead(app, identity string) (uint64, error) {
	key := key2(app, identity)
	if head, ok := s.mem.head(key); ok {
		return head, nil
	}
	return boltdb.ViewValue(s.db, func(tx *bolt.Tx) (uint64, error) { return durableHead(tx, key) })
}

func durableHead(tx *bolt.Tx, key string) (uint64, error) {
	v := tx.Bucket(bucketInboxHeads).Get([]byte(key))
	if v == nil {
		return 0, nil
	}
	return boltdb.ParseU64(v)
}

// Participation implements messaging.Store.
func (s *BoltStore) Participation(app, identity, conv string) (*messagingstoragev1.ParticipationRecord, error) {
	rec := &messagingstoragev1.ParticipationRecord{}
	if err := s.get(bucketParticipations, key3(app, identity, conv), rec, "%s takes no part in %s", identity, conv); err != nil {
		return nil, err
	}
	return rec, nil
}

// Participations implements messaging.Store.
func (s *BoltStore) Participations(app, identity, after string, limit int) ([]*messagingstoragev1.ParticipationRecord, error) {
	var out []*messagingstoragev1.ParticipationRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketParticipations)
		pfx := []byte(key2(app, identity) + "\x00")
		c := b.Cursor()
		k, _ := c.Seek(append(bytes.Clone(pfx), after...))
		if k != nil && after != "" && string(k[len(pfx):]) == after {
			k, _ = c.Next()
		}
		for ; k != nil && bytes.HasPrefix(k, pfx) && len(out) < limit; k, _ = c.Next() {
			rec := &messagingstoragev1.ParticipationRecord{}
			if err := boltdb.GetProto(b, k, rec); err != nil {
				return err
			}
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}
