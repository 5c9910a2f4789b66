package msgstore

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// Writing the index entries down in bbolt: Flush and FlushAll, a writer's flush of the
// memIndex's pending entries, indexEntry for the entries the indexes did not cover at
// opening, and sortedPuts.

// Flush implements messaging.Store: it writes the pending index entries down once the
// oldest has waited FlushAge.
func (s *BoltStore) Flush() (bool, error) {
	switch n, age := s.mem.pendingCount(); {
	case n == 0:
		return false, nil
	case age < s.flushAge:
		return true, nil
	}
	return false, s.FlushAll()
}

// FlushAll writes every pending index entry down, whatever its age. It is a write:
// like Apply, it must not run concurrently with the other writes.
func (s *BoltStore) FlushAll() error {
	if n, _ := s.mem.pendingCount(); n == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		return s.newWriter(tx, time.Time{}, 0).flush()
	})
	if err != nil {
		return fmt.Errorf("messaging: store: flush: %w", err)
	}
	s.mem.merge(nil, true)
	return nil
}

// flush writes every pending index entry, the memIndex's and the batch's, and records
// that the indexes now cover the whole log. Each bucket's entries are put in key order,
// so that bbolt walks each tree once from left to right instead of jumping about it in
// the maps' order.
func (w *writer) flush() error {
	mem := w.s.mem
	var msgs, inbox, heads, convs, idem, events sortedPuts
	for i, cs := range []map[string]*memConv{mem.convs, w.ov.convs} {
		for k, c := range cs {
			if i == 0 && w.ov.convs[k] != nil || len(c.pending) == 0 {
				continue // the batch's copy supersedes it
			}
			for i, pos := range c.pending {
				msgs.add(seqKey(k, c.first+uint64(i)), boltdb.U64(pos))
			}
			v, err := proto.Marshal(c.state.record())
			if err != nil {
				return err
			}
			convs.add([]byte(k), boltdb.Seal([]byte(k), v))
		}
	}
	for i, inboxes := range []map[string]*memInbox{mem.inboxes, w.ov.inboxes} {
		for k, in := range inboxes {
			if i == 0 && w.ov.inboxes[k] != nil || len(in.pending) == 0 {
				continue
			}
			for i, pos := range in.pending {
				inbox.add(seqKey(k, in.first+uint64(i)), boltdb.U64(pos))
			}
			heads.add([]byte(k), boltdb.U64(in.head))
		}
	}
	for _, p := range []struct {
		puts       *sortedPuts
		mem, batch map[string]uint64
	}{{&idem, mem.idem, w.ov.idem}, {&events, mem.events, w.ov.events}} {
		for _, m := range []map[string]uint64{p.mem, p.batch} {
			for k, pos := range m {
				p.puts.add([]byte(k), boltdb.U64(pos))
			}
		}
	}
	for _, p := range []struct {
		bucket []byte
		puts   *sortedPuts
		fill   float64
	}{
		// Mostly appends at the end of each conversation's or inbox's range.
		{bucketMessages, &msgs, 0.9}, {bucketInbox, &inbox, 0.9}, {bucketInboxHeads, &heads, 0.9},
		{bucketConversations, &convs, bolt.DefaultFillPercent},
		{bucketIdempotency, &idem, bolt.DefaultFillPercent}, {bucketEvents, &events, bolt.DefaultFillPercent},
	} {
		b := w.tx.Bucket(p.bucket)
		b.FillPercent = p.fill
		if err := p.puts.put(b); err != nil {
			return err
		}
	}
	exp := w.tx.Bucket(bucketExpiry)
	exp.FillPercent = 0.9
	// One entry per run of consecutive positions expiring at the same time.
	var run *expiryEntry
	var last uint64
	for _, list := range [][]expiryEntry{mem.expiry, w.ov.expiry} {
		for _, e := range list {
			if run != nil && e.at == run.at && e.pos == last+1 {
				last = e.pos
				continue
			}
			if run != nil {
				if err := exp.Put(expiryKey(run.at, run.pos), boltdb.U64(last)); err != nil {
					return err
				}
			}
			run, last = &e, e.pos
		}
	}
	if run != nil {
		if err := exp.Put(expiryKey(run.at, run.pos), boltdb.U64(last)); err != nil {
			return err
		}
	}
	return w.tx.Bucket(bucketIndexState).Put(keyIndexedThrough, boltdb.U64(w.log.Sequence()))
}

// indexEntry writes the index entries of one log entry, as a flush would have: opening
// the store calls it for the entries the indexes did not cover yet. It is idempotent.
func indexEntry(tx *bolt.Tx, pos uint64, rec *messagingstoragev1.MessagingLogRecord, fan *messagingstoragev1.MessagingFanoutRecord) error {
	app, p := rec.GetAppId(), boltdb.U64(pos)
	heads := tx.Bucket(bucketInboxHeads)
	for i, r := range fan.GetRecipients() {
		seq := fan.GetInboxSequences()[i]
		k := key2(app, r)
		if err := tx.Bucket(bucketInbox).Put(seqKey(k, seq), p); err != nil {
			return err
		}
		if v := heads.Get([]byte(k)); v != nil {
			if head, err := boltdb.ParseU64(v); err != nil || head >= seq {
				if err != nil {
					return err
				}
				continue
			}
		}
		if err := heads.Put([]byte(k), boltdb.U64(seq)); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bucketExpiry).Put(expiryKey(rec.GetExpiresAt().AsTime().UnixNano(), pos), p); err != nil {
		return err
	}
	if ev := rec.GetEvent(); ev != nil {
		return tx.Bucket(bucketEvents).Put([]byte(key2(app, ev.GetEventId())), p)
	}
	m := rec.GetMessage()
	ck := key2(app, m.GetConversationId())
	if err := tx.Bucket(bucketMessages).Put(seqKey(ck, m.GetSequence()), p); err != nil {
		return err
	}
	if err := tx.Bucket(bucketIdempotency).Put([]byte(key3(app, m.GetSender(), m.GetClientMessageId())), p); err != nil {
		return err
	}
	convs := tx.Bucket(bucketConversations)
	conv := &messagingstoragev1.ConversationRecord{}
	if err := boltdb.GetProto(convs, []byte(ck), conv); err != nil {
		// The record is written in the transaction that appends the first message.
		return fmt.Errorf("conversation %s of message %d: %w", m.GetConversationId(), m.GetSequence(), err)
	}
	if conv.GetLatestSequence() >= m.GetSequence() {
		return nil
	}
	conv.LatestSequence, conv.LatestMessageAt = m.GetSequence(), m.GetServerTime()
	return boltdb.PutProto(convs, []byte(ck), conv)
}

// sortedPuts collects a bucket's puts to make them in key order.
type sortedPuts []struct{ k, v []byte }

func (p *sortedPuts) add(k, v []byte) { *p = append(*p, struct{ k, v []byte }{k, v}) }

func (p sortedPuts) put(b *bolt.Bucket) error {
	slices.SortFunc(p, func(x, y struct{ k, v []byte }) int { return bytes.Compare(x.k, y.k) })
	for _, kv := range p {
		if err := b.Put(kv.k, kv.v); err != nil {
			return err
		}
	}
	return nil
}
