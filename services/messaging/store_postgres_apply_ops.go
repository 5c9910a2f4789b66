package messaging

import (
	"slices"

	"google.golang.org/protobuf/types/known/timestamppb"

	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
	"github.com/umbra-e2ee/umbra/services/messaging/internal/msgstore"
)

// Each op of a batch in PostgreSQL, checked and numbered in memory in order, between
// the round trips (send, event, cursors), with msgstore's engine-independent checks.

// appendEntry adds rec's items to the recipients' inboxes.
func (p *pgBatch) appendEntry(rec *messagingstoragev1.MessagingLogRecord, app string, recipients []string, expires int64, conv *string, seq *int64, event []byte) {
	for _, r := range recipients {
		in := p.inboxes[key2(app, r)] // locked: every recipient of an op that stores
		if in.head == in.base {
			p.grown = append(p.grown, in)
		}
		in.head++
		in.items = append(in.items, InboxItem{Sequence: in.head, Record: rec})
		p.inboxRows.add(app, r, int64(in.head), expires, conv, seq, event)
	}
}

func (p *pgBatch) send(i int, m *SendOp) {
	r := &p.results[i]
	if !msgstore.DirectOK(m) {
		r.err = msgstore.ErrNotDirect
		return
	}
	ik := key3(m.AppID, m.Sender, m.ClientMessageID)
	if prev := p.sent[ik]; prev != nil {
		if prev.err != nil {
			r.err = prev.err
			return
		}
		pm := prev.rec.GetMessage()
		if r.err = msgstore.CheckRetry(pm, m); r.err != nil {
			return
		}
		r.seq, r.duplicate = pm.GetSequence(), true
		r.serverTime, r.expires = pm.GetServerTime().AsTime(), prev.rec.GetExpiresAt().AsTime()
		return
	}
	c := p.convs[key2(m.AppID, m.ConversationID)]
	if c.err != nil {
		r.err = c.err
		return
	}
	created := c.rec == nil
	if created {
		c.recDirty = true
		c.rec = &messagingstoragev1.ConversationRecord{ConversationId: m.ConversationID, Kind: m.Kind, CreatedAt: timestamppb.New(p.now)}
		if m.Kind == kindDirect {
			c.rec.Participants = m.Recipients
		}
	}
	rec, seq, at, expires := msgstore.NewMessage(m, c.rec.GetLatestSequence(), c.latestAt, p.now, p.ttl)
	conv, sq := m.ConversationID, int64(seq)
	p.appendEntry(rec, m.AppID, m.Recipients, expires.UnixNano(), &conv, &sq, nil)
	p.msgRows.add(m, seq, expires.UnixNano(), at.UnixNano(), rec)
	c.rec.LatestSequence, c.rec.LatestMessageAt, c.latestAt, c.dirty = seq, timestamppb.New(at), at, true
	p.sent[ik] = &pgEntry{rec: rec}
	r.seq, r.serverTime, r.expires = seq, at, expires

	switch {
	case created && m.Kind == kindDirect:
		for j, id := range m.Recipients {
			p.ensurePart(m.AppID, id, &messagingstoragev1.ParticipationRecord{ConversationId: m.ConversationID, Kind: m.Kind, Peer: m.Recipients[1-j]})
		}
	case m.Kind == kindGroup && c.rec.GetParticipantsVersion() != m.MembershipVersion:
		for _, id := range m.Recipients {
			p.ensurePart(m.AppID, id, &messagingstoragev1.ParticipationRecord{ConversationId: m.ConversationID, Kind: kindGroup})
		}
		c.rec.ParticipantsVersion, c.recDirty = m.MembershipVersion, true
	}
}

// ensurePart gives identity a participation in rec's conversation unless it has one.
func (p *pgBatch) ensurePart(app, identity string, rec *messagingstoragev1.ParticipationRecord) {
	k := key3(app, identity, rec.GetConversationId())
	if p.parts[k] == nil {
		p.parts[k] = &pgPart{rec: rec, dirty: true, unread: true}
	}
}

func (p *pgBatch) event(i int, e *EventOp) {
	r := &p.results[i]
	ek := key2(e.AppID, e.EventID)
	if prev := p.events[ek]; prev != nil {
		if prev.err != nil {
			r.err = prev.err
			return
		}
		if r.err = msgstore.CheckEventRetry(prev.rec.GetEvent(), prev.fan, e); r.err != nil {
			return
		}
		r.duplicate, r.recipients = true, len(prev.fan)
		return
	}
	rec, expires := msgstore.NewEvent(e, p.now, p.ttl)
	p.appendEntry(rec, e.AppID, e.Recipients, expires.UnixNano(), nil, nil, []byte(e.EventID))
	p.eventRows.add(e, expires.UnixNano(), rec)
	p.events[ek] = &pgEntry{rec: rec, fan: e.Recipients}
	r.recipients = len(e.Recipients)
}

func (p *pgBatch) cursors(i int, u *CursorOp) {
	r := &p.results[i]
	c := p.convs[key2(u.AppID, u.ConversationID)]
	if c.err != nil {
		r.err = c.err
		return
	}
	// A direct conversation not started yet has no latest sequence: 0.
	if r.err = msgstore.CheckCursors(u, c.rec.GetLatestSequence()); r.err != nil {
		return
	}
	k := key3(u.AppID, u.Identity, u.ConversationID)
	part := p.parts[k]
	switch {
	case part == nil:
		part = &pgPart{rec: msgstore.NewParticipation(u)}
	case part.err != nil:
		r.err = part.err
		return
	}
	// A copy: the earlier op's result keeps its record.
	if rec := msgstore.MoveCursors(part.rec, u, p.now); rec != nil {
		part = &pgPart{rec: rec, stored: part.stored, dirty: true}
		p.parts[k] = part
	}
	r.cursor = part.rec
}

// expiries returns the range of the expiry times the batch writes.
func (p *pgBatch) expiries() (lo, hi int64, ok bool) {
	all := slices.Concat(p.msgRows.expires, p.eventRows.expires)
	if len(all) == 0 {
		return 0, 0, false
	}
	return slices.Min(all), slices.Max(all), true
}
