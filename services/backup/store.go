package backup

import (
	"errors"

	backupstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/backup/v1"
)

// errNoSecretHere is SecretCheck's answer, without a candidate, on a store that has no
// check value yet.
var errNoSecretHere = errors.New("backup: the store has no secret check value")

// Change is what a SlotUpdate decided to write, in the transaction that read the slot.
type Change struct {
	// Write stores the (modified) slot record.
	Write bool
	// Event, when set, is appended to the outbox; the store assigns its sequence.
	Event *backupstoragev1.BackupOutboxRecord
}

// SlotUpdate decides, inside a transaction, what to do with one slot. It gets the
// slot's record (a fresh one, version 0 and no backup, when the slot was never
// written), may modify it, and returns what to write and the error to answer with.
// Both apply: a refusal that spends an attempt is written and still refused. An engine
// may run update more than once (PostgreSQL retries a transaction that a concurrent
// one aborted), each time on a freshly read record; only the last run's change is
// written, so update must change nothing but rec and its result.
type SlotUpdate func(rec *backupstoragev1.BackupSlotRecord) (Change, error)

// Store is the backup service's state. Every method is one transaction: it commits
// whole or changes nothing. Slots are namespaced by app and identity.
type Store interface {
	// SecretCheck returns the server secret's check value. When the file has none yet
	// it stores candidate first.
	SecretCheck(candidate []byte) ([]byte, error)

	// Slot returns a slot's record; a slot never written is a fresh record.
	Slot(appID, identity string, slot uint32) (*backupstoragev1.BackupSlotRecord, error)
	// Slots returns every written slot of identity, in slot order.
	Slots(appID, identity string) ([]*backupstoragev1.BackupSlotRecord, error)
	// UpdateSlot reads a slot, lets update decide, writes what it returned and returns
	// the record as update left it and update's error.
	UpdateSlot(appID, identity string, slot uint32, update SlotUpdate) (*backupstoragev1.BackupSlotRecord, error)

	// Outbox returns up to limit pending events, oldest first.
	Outbox(limit int) ([]*backupstoragev1.BackupOutboxRecord, error)
	// ClaimOutbox returns up to limit pending events for this store's user to deliver,
	// oldest first. Where replicas share the store, one delivers at a time and the
	// others' claims get none meanwhile (PostgresStore.ClaimOutbox), so that an event
	// is published once and in order, as by the one process of a bbolt file.
	ClaimOutbox(limit int) ([]*backupstoragev1.BackupOutboxRecord, error)
	// DeleteOutbox removes a delivered event; a missing one is no error.
	DeleteOutbox(sequence uint64) error

	Close() error
}
