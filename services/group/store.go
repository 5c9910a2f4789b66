package group

import (
	"time"

	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// Store is the group service's state. Every change is one transaction (Update or
// Batch): it commits whole or changes nothing. The service's rules run inside the
// transaction on a Tx, whose methods are the only way they touch the state.
// Everything is namespaced by app. It says nothing of the engine, so that another can
// implement it beside bbolt (OpenBoltStore, store_bolt.go).
type Store interface {
	// View runs fn in a read-only transaction.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction, committed when fn returns nil. An
	// engine may run fn again when the transaction was aborted for a concurrent one
	// (PostgreSQL's deadlock detection), so fn must reset whatever it reports.
	Update(fn func(Tx) error) error
	// Batch is Update coalesced with concurrent calls into one commit. fn may run more
	// than once (only one run commits), so it must reset whatever it reports.
	Batch(fn func(Tx) error) error
	// ClaimOutbox returns up to limit outbox records, oldest first, for this store's
	// delivery loop to publish and then delete. Where several replicas share the
	// storage, one delivers at a time and the others get none meanwhile, so that each
	// record is published once and in order.
	ClaimOutbox(limit int) ([]*storagev1.GroupOutboxRecord, error)
	// Close closes the store.
	Close() error
}

// Tx is one transaction on the group store: the only way the service's rules read and
// write it. Records it returns are copies: they stay valid after the transaction.
type Tx interface {
	// Group returns the group, or an error wrapping errs.ErrNotFound.
	Group(app, group string) (*storagev1.GroupRecord, error)
	// PutGroup writes g.
	PutGroup(g *storagev1.GroupRecord) error
	// Member returns a member, or nil if identity is not one.
	Member(app, group, identity string) (*storagev1.GroupMemberRecord, error)
	// PutMember writes m and the member_groups index.
	PutMember(app, group string, m *storagev1.GroupMemberRecord) error
	// DeleteMember removes a member, its index entry and its epoch keys.
	DeleteMember(app, group, identity string) error
	// Members calls fn for each member of the group, in identity order, starting after
	// `after` (empty: from the first). fn returns false to stop.
	Members(app, group, after string, fn func(*storagev1.GroupMemberRecord) (bool, error)) error
	// AllMembers returns every member of the group, in identity order.
	AllMembers(app, group string) ([]*storagev1.GroupMemberRecord, error)
	// MemberGroups calls fn with each group identity is a member of, in group order,
	// starting after `after`. fn returns false to stop.
	MemberGroups(app, identity, after string, fn func(group string) (bool, error)) error
	// Ban returns a ban, or nil.
	Ban(app, group, identity string) (*storagev1.GroupBanRecord, error)
	// PutBan writes a ban.
	PutBan(app, group string, b *storagev1.GroupBanRecord) error
	// DeleteBan removes a ban.
	DeleteBan(app, group, identity string) error
	// Bans returns the group's banned identities, in identity order.
	Bans(app, group string) ([]string, error)
	// JoinRequest returns a pending join request, or nil.
	JoinRequest(app, group, identity string) (*storagev1.GroupJoinRequestRecord, error)
	// PutJoinRequest writes a join request.
	PutJoinRequest(app, group string, r *storagev1.GroupJoinRequestRecord) error
	// DeleteJoinRequest removes a join request.
	DeleteJoinRequest(app, group, identity string) error
	// JoinRequests returns the group's pending join requests, in identity order.
	JoinRequests(app, group string) ([]*storagev1.GroupJoinRequestRecord, error)
	// Invitation returns an invitation (expired or not), or nil.
	Invitation(app, group, invitee string) (*storagev1.GroupInvitationRecord, error)
	// PutInvitation writes an invitation and its index entry.
	PutInvitation(app string, inv *storagev1.GroupInvitationRecord) error
	// DeleteInvitation removes an invitation and its index entry.
	DeleteInvitation(app, group, invitee string) error
	// Invitations returns the group's invitations, in invitee order.
	Invitations(app, group string) ([]*storagev1.GroupInvitationRecord, error)
	// InviteeInvitations returns every invitation of invitee, in group order.
	InviteeInvitations(app, invitee string) ([]*storagev1.GroupInvitationRecord, error)
	// Epoch returns a committed epoch, or nil.
	Epoch(app, group string, epoch uint64) (*storagev1.GroupEpochRecord, error)
	// PutEpoch writes a committed epoch.
	PutEpoch(app, group string, e *storagev1.GroupEpochRecord) error
	// PutStatement appends a statement to the group's membership chain.
	PutStatement(app, group string, r *storagev1.GroupStatementRecord) error
	// Statements calls fn with the group's statements after sequence after, in order.
	// fn returns false to stop.
	Statements(app, group string, after uint64, fn func(*storagev1.GroupStatementRecord) (bool, error)) error
	// EpochKey returns identity's key of epoch, or nil.
	EpochKey(app, group, identity string, epoch uint64) (*storagev1.GroupEpochKeyRecord, error)
	// PutEpochKey writes identity's key of an epoch.
	PutEpochKey(app, group, identity string, k *storagev1.GroupEpochKeyRecord) error
	// EpochKeys calls fn with identity's keys of epochs above after, in epoch order. fn
	// returns false to stop.
	EpochKeys(app, group, identity string, after uint64, fn func(*storagev1.GroupEpochKeyRecord) (bool, error)) error
	// Upload returns the caller's upload in the group, or nil.
	Upload(app, group, owner string) (*storagev1.GroupUploadRecord, error)
	// PutUpload writes an upload's record.
	PutUpload(app, group string, u *storagev1.GroupUploadRecord) error
	// DeleteUpload removes owner's upload in the group and its keys, if there is one.
	DeleteUpload(app, group, owner string) error
	// StagedKey returns a staged key of an upload, or nil.
	StagedKey(uploadID, identity string) (*storagev1.GroupStagedKeyRecord, error)
	// PutStagedKey writes a staged key of an upload.
	PutStagedKey(uploadID string, k *storagev1.GroupStagedKeyRecord) error
	// StagedKeys returns every staged key of an upload, in identity order.
	StagedKeys(uploadID string) ([]*storagev1.GroupStagedKeyRecord, error)
	// ExpiredUploads returns (app, group, owner) of up to limit uploads expired at now.
	ExpiredUploads(now time.Time, limit int) ([][3]string, error)
	// SetRotationDue moves the group's entry in rotation_due from old to at (either may be
	// the zero time: none).
	SetRotationDue(app, group string, old, at time.Time) error
	// DueGroups returns up to limit entries of rotation_due at or before now, oldest first.
	DueGroups(now time.Time, limit int) ([]DueEntry, error)
	// DeleteGroupData removes a group and everything kept for it. Its outbox records stay:
	// they are already addressed.
	DeleteGroupData(g *storagev1.GroupRecord) error
	// AppendOutbox adds r to the outbox with the next sequence.
	AppendOutbox(r *storagev1.GroupOutboxRecord) error
	// Outbox returns up to limit outbox records, oldest first.
	Outbox(limit int) ([]*storagev1.GroupOutboxRecord, error)
	// DeleteOutbox removes a delivered outbox record.
	DeleteOutbox(seq uint64) error
	// CardCursor returns the last card event the follower applied.
	CardCursor() (uint64, error)
	// SetCardCursor records the last card event the follower applied.
	SetCardCursor(seq uint64) error
	// StaleInvitations returns up to limit invitations that expired before `before`, with
	// their apps.
	StaleInvitations(before time.Time, limit int) ([]*storagev1.GroupInvitationRecord, []string, error)
	// WroteEvents reports whether the transaction appended to the outbox, so that the
	// delivery loop is woken once it commits.
	WroteEvents() bool
}

// DueEntry is an entry of the rotation_due index.
type DueEntry struct {
	At         time.Time
	App, Group string
}
