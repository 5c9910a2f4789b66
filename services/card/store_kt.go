package card

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/transparency-dev/merkle/proof"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The key transparency log's keys, entries and checkpoints as every engine builds and
// checks them: an engine only reads and writes them, in its transaction and its layout.

// maxSigningLogKeys is how many log keys may sign at once: the current one and, during
// a rotation, its successor. One rotation at a time keeps what clients must be told
// simple: "add this key", then "drop that one".
const maxSigningLogKeys = 2

// noLogKey is the answer before the log's first key.
func noLogKey() error { return errs.NotFoundf("the key transparency log has no key yet") }

// noCheckpoint is the answer before the first checkpoint.
func noCheckpoint() error {
	return errs.Unavailablef("the key transparency log has no checkpoint yet: the card service publishes its first one within a second of starting; retry")
}

// signingLogKeys returns the keys of all that sign checkpoints, oldest first.
func signingLogKeys(all []*cardstoragev1.LogKeyRecord) []*cardstoragev1.LogKeyRecord {
	var out []*cardstoragev1.LogKeyRecord
	for _, k := range all {
		if k.GetRetiredAt() == nil {
			out = append(out, k)
		}
	}
	return out
}

// logKeysInOrder returns the log's keys as LogKeys does: first, the log's first key,
// then added, those that rotations added, oldest first (by creation, then id).
func logKeysInOrder(first *cardstoragev1.LogKeyRecord, added []*cardstoragev1.LogKeyRecord) []*cardstoragev1.LogKeyRecord {
	slices.SortStableFunc(added, func(a, b *cardstoragev1.LogKeyRecord) int {
		if c := a.GetCreatedAt().AsTime().Compare(b.GetCreatedAt().AsTime()); c != 0 {
			return c
		}
		return strings.Compare(a.GetKeyId(), b.GetKeyId())
	})
	return append([]*cardstoragev1.LogKeyRecord{first}, added...)
}

// checkAddLogKey is the check of AddLogKey, the same in every engine: next is a new
// key (id not taken, with its seed) of the log's origin, and no rotation is in
// progress.
func checkAddLogKey(all []*cardstoragev1.LogKeyRecord, next *cardstoragev1.LogKeyRecord) error {
	if len(all) == 0 {
		return noLogKey()
	}
	if next.GetOrigin() != all[0].GetOrigin() {
		return errs.Invalidf("a log key of origin %q for the log %q: a rotation keeps the origin", next.GetOrigin(), all[0].GetOrigin())
	}
	if len(next.GetSeed()) == 0 || next.GetRetiredAt() != nil {
		return errs.Invalidf("log key %s: a new key has its seed and is not retired", next.GetKeyId())
	}
	for _, k := range all {
		if k.GetKeyId() == next.GetKeyId() {
			return errs.Existsf("log key %s exists already", next.GetKeyId())
		}
	}
	if n := len(signingLogKeys(all)); n >= maxSigningLogKeys {
		return errs.Preconditionf("a log key rotation is in progress already (%d keys sign): retire one of them first", n)
	}
	return nil
}

// retireLogKey is the check and the change of RetireLogKey, the same in every engine:
// it returns the retired copy of the key keyID of all (retired_at set, seed erased)
// and the keys that sign once it is retired, or ErrNotFound for a key the log never
// had, ErrPrecondition for a retired key or the only one that signs.
func retireLogKey(all []*cardstoragev1.LogKeyRecord, keyID string, at time.Time) (retired *cardstoragev1.LogKeyRecord, remaining []*cardstoragev1.LogKeyRecord, err error) {
	i := slices.IndexFunc(all, func(k *cardstoragev1.LogKeyRecord) bool { return k.GetKeyId() == keyID })
	switch {
	case i < 0:
		return nil, nil, errs.NotFoundf("the key transparency log has no key %s", keyID)
	case all[i].GetRetiredAt() != nil:
		return nil, nil, errs.Preconditionf("log key %s was retired at %s", keyID, all[i].GetRetiredAt().AsTime().Format(time.RFC3339))
	case len(signingLogKeys(all)) < 2:
		return nil, nil, errs.Preconditionf("log key %s is the only key that signs checkpoints: rotate first (a new key), then retire this one", keyID)
	}
	retired = proto.Clone(all[i]).(*cardstoragev1.LogKeyRecord)
	retired.Seed, retired.RetiredAt = nil, timestamppb.New(at)
	remaining = slices.DeleteFunc(signingLogKeys(all), func(k *cardstoragev1.LogKeyRecord) bool { return k.GetKeyId() == keyID })
	return retired, remaining, nil
}

// logKeyTx is one transaction of an engine as the log key rotations use it.
type logKeyTx interface {
	// logKeys reads every log key, oldest first; none before the first.
	logKeys() ([]*cardstoragev1.LogKeyRecord, error)
	// insertLogKey stores next, a key that a rotation adds.
	insertLogKey(next *cardstoragev1.LogKeyRecord) error
	// updateLogKey writes rec, a stored key changed; first says it is the log's first.
	updateLogKey(rec *cardstoragev1.LogKeyRecord, first bool) error
	// latest returns the latest checkpoint; nil if there is none.
	latest() (*cardstoragev1.CheckpointRecord, error)
	// replaceCheckpoint stores rec in place of the checkpoint of its size.
	replaceCheckpoint(rec *cardstoragev1.CheckpointRecord) error
}

// updateLogKeys runs f in one read-write transaction of an engine, as the log key
// rotations use it: the transaction commits what f wrote, or nothing if f fails.
type updateLogKeys func(f func(tx logKeyTx) error) error

// addLogKeyWith is AddLogKey, the same in every engine, in a transaction of update.
func addLogKeyWith(update updateLogKeys, next *cardstoragev1.LogKeyRecord, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, error) {
	var out *cardstoragev1.CheckpointRecord
	err := update(func(tx logKeyTx) error {
		all, err := tx.logKeys()
		if err != nil {
			return err
		}
		if err := checkAddLogKey(all, next); err != nil {
			return err
		}
		if err := tx.insertLogKey(next); err != nil {
			return err
		}
		out, err = resignLatest(tx, signingLogKeys(append(all, next)), sign)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// retireLogKeyWith is RetireLogKey, the same in every engine, in a transaction of
// update.
func retireLogKeyWith(update updateLogKeys, keyID string, at time.Time, sign CheckpointSigner) (*cardstoragev1.LogKeyRecord, *cardstoragev1.CheckpointRecord, error) {
	var retired *cardstoragev1.LogKeyRecord
	var out *cardstoragev1.CheckpointRecord
	err := update(func(tx logKeyTx) error {
		all, err := tx.logKeys()
		if err != nil {
			return err
		}
		var remaining []*cardstoragev1.LogKeyRecord
		if retired, remaining, err = retireLogKey(all, keyID, at); err != nil {
			return err
		}
		if err := tx.updateLogKey(retired, keyID == all[0].GetKeyId()); err != nil {
			return err
		}
		out, err = resignLatest(tx, remaining, sign)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return retired, out, nil
}

// resignLatest signs the latest checkpoint again with keys and stores it in its place;
// nil before the first checkpoint.
func resignLatest(tx logKeyTx, keys []*cardstoragev1.LogKeyRecord, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, error) {
	latest, err := tx.latest()
	if err != nil || latest == nil {
		return nil, err
	}
	rec, err := resignCheckpoint(latest, keys, sign)
	if err != nil {
		return nil, err
	}
	return rec, tx.replaceCheckpoint(rec)
}

// resignCheckpoint signs the checkpoint rec again with keys: the same body (size and
// roots), other log signatures. It is what a rotation stores in place of the latest
// checkpoint, so that the change of keys shows at once, not at the next card event.
func resignCheckpoint(rec *cardstoragev1.CheckpointRecord, keys []*cardstoragev1.LogKeyRecord, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, error) {
	if len(rec.GetLogRoot()) != kt.HashSize || len(rec.GetMapRoot()) != kt.HashSize {
		return nil, errs.Damagedf("card store: the checkpoint of %d entries has roots of %d and %d bytes", rec.GetSize(), len(rec.GetLogRoot()), len(rec.GetMapRoot()))
	}
	note, err := sign(&kt.Checkpoint{Size: rec.GetSize(), LogRoot: [kt.HashSize]byte(rec.GetLogRoot()), MapRoot: [kt.HashSize]byte(rec.GetMapRoot())}, keys)
	if err != nil {
		return nil, fmt.Errorf("card: sign the checkpoint of %d entries again: %w", rec.GetSize(), err)
	}
	out := proto.Clone(rec).(*cardstoragev1.CheckpointRecord)
	out.SignedNote = note
	return out, nil
}

// logLeaves returns the log entries of evs, the card events that follow a log of size
// entries, in order: entry i is the event of sequence size+1+i, and a gap in the feed
// is an error.
func logLeaves(size uint64, evs []*cardstoragev1.CardEventRecord) ([][]byte, error) {
	leaves := make([][]byte, 0, len(evs))
	for _, ev := range evs {
		want := size + 1 + uint64(len(leaves))
		if ev.GetSequence() != want {
			return nil, fmt.Errorf("card: key transparency log of %d entries: the card event feed has event %d where %d should be", size+uint64(len(leaves)), ev.GetSequence(), want)
		}
		leaf, err := eventLeaf(ev)
		if err != nil {
			return nil, err
		}
		leaves = append(leaves, leaf)
	}
	return leaves, nil
}

// signCheckpoint returns the checkpoint of the log's new state, size entries under
// logRoot and mapRoot, made at at and signed by sign with those of the log keys all
// that sign.
func signCheckpoint(size uint64, logRoot []byte, mapRoot [kt.HashSize]byte, all []*cardstoragev1.LogKeyRecord, at time.Time, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, error) {
	cp := &kt.Checkpoint{Size: size, LogRoot: [kt.HashSize]byte(logRoot), MapRoot: mapRoot}
	note, err := sign(cp, signingLogKeys(all))
	if err != nil {
		return nil, fmt.Errorf("card: sign the checkpoint of %d entries: %w", cp.Size, err)
	}
	return &cardstoragev1.CheckpointRecord{Size: cp.Size, LogRoot: logRoot, MapRoot: mapRoot[:], SignedNote: note, CreatedAt: timestamppb.New(at)}, nil
}

// appendTx is one transaction of an engine as the log's appender uses it.
type appendTx interface {
	// latest returns the latest checkpoint; nil if there is none.
	latest() (*cardstoragev1.CheckpointRecord, error)
	// events reads up to limit card events with a sequence above after, in order.
	events(after uint64, limit int) ([]*cardstoragev1.CardEventRecord, error)
	// readAhead reads what the append of evs to a log of size entries will read, where
	// reading it at once costs less than one read at a time (or does nothing).
	readAhead(size uint64, evs []*cardstoragev1.CardEventRecord) error
	// state is the log and the map in the transaction; flush writes the tiles that
	// changed.
	state() kt.State
	flush() error
	// putLeaves stores leaves as the log's entries from index size on.
	putLeaves(size uint64, leaves [][]byte) error
	// logKeys reads every log key, oldest first.
	logKeys() ([]*cardstoragev1.LogKeyRecord, error)
	// putCheckpoint stores rec, the checkpoint of the log's new size.
	putCheckpoint(rec *cardstoragev1.CheckpointRecord) error
}

// updateLog runs f in one read-write transaction of an engine, as the log's appender
// uses it: the transaction commits what f wrote, or nothing if f fails.
type updateLog func(f func(tx appendTx) error) error

// appendLogWith is AppendLog, the same in every engine, in a transaction of update.
func appendLogWith(update updateLog, limit int, at time.Time, sign CheckpointSigner) (*cardstoragev1.CheckpointRecord, int, error) {
	var out *cardstoragev1.CheckpointRecord
	appended := 0
	err := update(func(t appendTx) error {
		out, appended = nil, 0
		latest, err := t.latest()
		if err != nil {
			return err
		}
		size := latest.GetSize()
		evs, err := t.events(size, max(limit, 0))
		if err != nil {
			return err
		}
		leaves, err := logLeaves(size, evs)
		if err != nil {
			return err
		}
		if len(leaves) == 0 && latest != nil {
			out = latest
			return nil
		}
		if err := t.readAhead(size, evs); err != nil {
			return err
		}
		logRoot, mapRoot, err := t.state().Append(size, leaves)
		if err != nil {
			return err
		}
		if err := t.flush(); err != nil {
			return err
		}
		if err := t.putLeaves(size, leaves); err != nil {
			return err
		}
		keys, err := t.logKeys()
		if err != nil {
			return err
		}
		if out, err = signCheckpoint(size+uint64(len(leaves)), logRoot, mapRoot, keys, at, sign); err != nil {
			return err
		}
		if err := t.putCheckpoint(out); err != nil {
			return err
		}
		appended = len(leaves)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, appended, nil
}

// logReadTx is one read-only transaction of an engine as the log's checkpoint and
// proofs are read.
type logReadTx interface {
	// latest returns the latest checkpoint; nil if there is none.
	latest() (*cardstoragev1.CheckpointRecord, error)
	// leaf returns entry index's bytes.
	leaf(index uint64) ([]byte, error)
	state() kt.State
	// prefetchProof reads at once the log tiles that hold the nodes of a proof, where
	// that costs less than one read at a time (or does nothing); a proof that cannot be
	// made (err) is left for kt to refuse.
	prefetchProof(nodes proof.Nodes, err error) error
}

// viewLog runs f in one read-only transaction of an engine.
type viewLog func(f func(tx logReadTx) error) error

// latestCheckpointWith is LatestCheckpoint, the same in every engine, in a transaction
// of view.
func latestCheckpointWith(view viewLog) (*cardstoragev1.CheckpointRecord, error) {
	var out *cardstoragev1.CheckpointRecord
	err := view(func(t logReadTx) error {
		var err error
		out, err = t.latest()
		if err == nil && out == nil {
			err = noCheckpoint()
		}
		return err
	})
	return out, err
}

// inclusionProofWith is InclusionProof, the same in every engine, in a transaction of
// view.
func inclusionProofWith(view viewLog, index, size uint64) ([]byte, [][]byte, error) {
	var leaf []byte
	var hashes [][]byte
	err := view(func(t logReadTx) error {
		if err := checkLogSize(t.latest, size); err != nil {
			return err
		}
		var err error
		if leaf, err = t.leaf(index); err != nil {
			return err
		}
		if err := t.prefetchProof(proof.Inclusion(index, size)); err != nil {
			return err
		}
		hashes, err = kt.InclusionProof(t.state().Log, index, size)
		return err
	})
	return leaf, hashes, err
}

// consistencyProofWith is ConsistencyProof, the same in every engine, in a transaction
// of view.
func consistencyProofWith(view viewLog, size1, size2 uint64) ([][]byte, error) {
	var hashes [][]byte
	err := view(func(t logReadTx) error {
		if err := checkLogSize(t.latest, size2); err != nil {
			return err
		}
		if err := t.prefetchProof(proof.Consistency(size1, size2)); err != nil {
			return err
		}
		var err error
		hashes, err = kt.ConsistencyProof(t.state().Log, size1, size2)
		return err
	})
	return hashes, err
}

// checkLogSize refuses a size past the log's, whose latest checkpoint latest reads.
func checkLogSize(latest func() (*cardstoragev1.CheckpointRecord, error), size uint64) error {
	cp, err := latest()
	if err != nil {
		return err
	}
	if size > cp.GetSize() {
		return errs.OutOfRangef("tree size %d is larger than the log, which has %d entries", size, cp.GetSize())
	}
	return nil
}

// The tiles' keys, the same in every engine: card.db's buckets and PostgreSQL's tables
// of tiles are keyed alike.

// logTileKey is a log tile's key: u8(tile level) u64(tile index).
func logTileKey(id kt.LogTileID) []byte {
	return binary.BigEndian.AppendUint64([]byte{id.Level}, id.Index)
}

// mapTileKey is a map tile's key: u16(depth) and the prefix's ceil(depth/8) bytes, so
// most keys are a few bytes.
func mapTileKey(id kt.MapNodeID) []byte {
	n := (int(id.Depth) + 7) / 8
	return append(binary.BigEndian.AppendUint16(make([]byte, 0, 2+n), id.Depth), id.Prefix[:n]...)
}
