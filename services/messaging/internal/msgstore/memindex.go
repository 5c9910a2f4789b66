package msgstore

import (
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// memIndex holds the index entries of log records that are committed but not yet
// written to the index buckets (the store flushes them in bulk), and the current state
// of every conversation and inbox those records touched. The committer is its only
// writer; readers copy what they need under the read lock, before they open their read
// transaction (see BoltStore.Messages for why that order matters).
//
// A conversation or inbox that is not here has its whole state in the index buckets: an
// entry is dropped only by the flush that wrote it down.
type memIndex struct {
	mu      sync.RWMutex
	convs   map[string]*memConv  // app 0 conversation_id
	inboxes map[string]*memInbox // app 0 identity
	idem    map[string]uint64    // app 0 sender 0 client_message_id -> position
	events  map[string]uint64    // app 0 event_id -> position
	expiry  []expiryEntry
	// entries counts the pending index entries, for the flush threshold; since is when
	// the oldest of them was committed.
	entries int
	since   time.Time
}

// memConv is a conversation's state, and pending[i] is the log position of sequence
// first+i.
type memConv struct {
	state   convState
	first   uint64
	pending []uint64
}

// convState is a ConversationRecord as the committer keeps it: a plain value that a
// batch copies cheaply before it changes it. Its slice and pointer are never modified.
type convState struct {
	id                  string
	kind                messagingstoragev1.ConversationRecordKind
	participants        []string
	createdAt           *timestamppb.Timestamp
	participantsVersion uint64
	latest              uint64
	latestAt            time.Time // zero before the first message
}

func stateOf(r *messagingstoragev1.ConversationRecord) convState {
	c := convState{
		id:                  r.GetConversationId(),
		kind:                r.GetKind(),
		participants:        r.GetParticipants(),
		createdAt:           r.GetCreatedAt(),
		participantsVersion: r.GetParticipantsVersion(),
		latest:              r.GetLatestSequence(),
	}
	if r.GetLatestMessageAt() != nil {
		c.latestAt = r.GetLatestMessageAt().AsTime()
	}
	return c
}

func (c convState) record() *messagingstoragev1.ConversationRecord {
	r := &messagingstoragev1.ConversationRecord{
		ConversationId:      c.id,
		Kind:                c.kind,
		Participants:        c.participants,
		LatestSequence:      c.latest,
		CreatedAt:           c.createdAt,
		ParticipantsVersion: c.participantsVersion,
	}
	if !c.latestAt.IsZero() {
		r.LatestMessageAt = timestamppb.New(c.latestAt)
	}
	return r
}

// memInbox is an inbox's state: pending[i] is the log position of inbox sequence first+i.
type memInbox struct {
	head    uint64
	first   uint64
	pending []uint64
	// id names the inbox, and base is its head when a batch took it (in an overlay);
	// items are the ones the batch added, for the notifier (cleared before the overlay
	// is merged, so that the memIndex does not keep them).
	id    inboxID
	base  uint64
	items []InboxItem
}

type expiryEntry struct {
	at  int64 // Unix ns
	pos uint64
}

func newMemIndex() *memIndex {
	m := &memIndex{}
	m.reset()
	return m
}

// reset forgets everything; the caller holds the write lock or is the only user.
func (m *memIndex) reset() {
	m.convs = map[string]*memConv{}
	m.inboxes = map[string]*memInbox{}
	m.idem = map[string]uint64{}
	m.events = map[string]uint64{}
	m.expiry = nil
	m.entries = 0
	m.since = time.Time{}
}

// convView is a reader's copy of a conversation's in-memory state.
type convView struct {
	state   convState
	first   uint64
	pending []uint64
}

func (m *memIndex) conv(key string) (convView, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c, ok := m.convs[key]
	if !ok {
		return convView{}, false
	}
	return convView{state: c.state, first: c.first, pending: slices.Clone(c.pending)}, true
}

// inboxView is a reader's copy of an inbox's in-memory state, from sequence after on.
type inboxView struct {
	head    uint64
	first   uint64
	pending []uint64
}

func (m *memIndex) inbox(key string, after uint64) (inboxView, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	in, ok := m.inboxes[key]
	if !ok {
		return inboxView{}, false
	}
	v := inboxView{head: in.head}
	end := in.first + uint64(len(in.pending))
	switch from := after + 1; {
	case from <= in.first:
		v.first, v.pending = in.first, slices.Clone(in.pending)
	case from < end:
		v.first, v.pending = from, slices.Clone(in.pending[from-in.first:])
	default:
		v.first = end
	}
	return v, true
}

// head returns an inbox's latest sequence if the memIndex holds the inbox.
func (m *memIndex) head(key string) (uint64, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	in, ok := m.inboxes[key]
	if !ok {
		return 0, false
	}
	return in.head, true
}

// pendingCount returns the number of index entries waiting for a flush and how long
// the oldest has waited.
func (m *memIndex) pendingCount() (int, time.Duration) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.entries == 0 {
		return 0, 0
	}
	return m.entries, time.Since(m.since)
}

// overlay is one batch's changes, seen by the batch's later operations and merged into
// the memIndex only once the batch has committed.
type overlay struct {
	convs   map[string]*memConv
	inboxes map[string]*memInbox
	idem    map[string]uint64
	events  map[string]uint64
	expiry  []expiryEntry
	entries int
}

type inboxID struct{ app, identity string }

func newOverlay() *overlay {
	return &overlay{
		convs:   map[string]*memConv{},
		inboxes: map[string]*memInbox{},
		idem:    map[string]uint64{},
		events:  map[string]uint64{},
	}
}

// merge publishes a committed batch's changes. After a flush the batch's entries, and
// everything pending before it, are in the index buckets, so the memIndex is emptied.
func (m *memIndex) merge(ov *overlay, flushed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if flushed {
		m.reset()
		return
	}
	if m.entries == 0 && ov.entries > 0 {
		m.since = time.Now()
	}
	// A state the batch only read (a cursor update's conversation) is in the index
	// buckets already; keeping it would let memory grow without a flush to drop it.
	for k, c := range ov.convs {
		if len(c.pending) > 0 {
			m.convs[k] = c
		}
	}
	for k, in := range ov.inboxes {
		if len(in.pending) > 0 {
			m.inboxes[k] = in
		}
	}
	for k, pos := range ov.idem {
		m.idem[k] = pos
	}
	for k, pos := range ov.events {
		m.events[k] = pos
	}
	m.expiry = append(m.expiry, ov.expiry...)
	m.entries += ov.entries
}
