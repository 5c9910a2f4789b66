package card

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	ktv1 "github.com/umbra-e2ee/umbra/proto/umbra/kt/v1"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// Key transparency (docs/key-transparency.md): the card event feed, followed into an
// append-only log and a map from identity to current card, committed by checkpoints
// that the log key signs.

// maxAppendBatch bounds the events one log transaction appends, so that a long feed
// (the first start after an upgrade) is appended in steps of bounded memory.
const maxAppendBatch = 10_000

// newLogKey makes a log key named origin, or, when origin is empty,
// "umbra/kt/<key id>".
func newLogKey(r io.Reader, origin string, now time.Time) (*cardstoragev1.LogKeyRecord, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(r, seed); err != nil {
		return nil, fmt.Errorf("card: randomness: %w", err)
	}
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	h := sha256.Sum256(pub)
	id := b32.EncodeToString(h[:10])
	if origin == "" {
		origin = "umbra/kt/" + id
	}
	return &cardstoragev1.LogKeyRecord{KeyId: id, Seed: seed, PublicKey: pub, Origin: origin, CreatedAt: timestamppb.New(now)}, nil
}

// openLogKey returns the log's origin, creating the log's first key if there is none.
// A configured origin must be the stored key's.
func openLogKey(store Store, cfg Config, log *zap.Logger) (string, error) {
	candidate, err := newLogKey(cfg.Rand, cfg.LogOrigin, cfg.Clock())
	if err != nil {
		return "", err
	}
	rec, err := store.LogKey(candidate)
	if err != nil {
		return "", fmt.Errorf("card: log key: %w", err)
	}
	if cfg.LogOrigin != "" && rec.GetOrigin() != cfg.LogOrigin {
		return "", fmt.Errorf("card: the key transparency log's origin is %q, and cannot become %q: clients and witnesses know the log by its origin (start a new log with a new card store)", rec.GetOrigin(), cfg.LogOrigin)
	}
	keys, err := store.LogKeys()
	if err != nil {
		return "", fmt.Errorf("card: log keys: %w", err)
	}
	signing := signingLogKeys(keys)
	if _, err := logSigners(signing); err != nil {
		return "", err
	}
	if rec == candidate {
		log.Info("key transparency log key created", zap.String("origin", rec.GetOrigin()), zap.String("verifier_key", logKeyView(rec).GetVerifierKey()))
	}
	if len(signing) > 1 {
		log.Info("a key transparency log key rotation is in progress: every checkpoint is signed by each of these keys; retire one when clients, witnesses and auditors have the new one",
			zap.Strings("verifier_keys", verifierKeys(signing)))
	}
	return rec.GetOrigin(), nil
}

// leafKind is the kind of a card event's log entry.
func leafKind(ev *cardstoragev1.CardEventRecord) (ktv1.LogEventKind, error) {
	switch ev.GetKind() {
	case cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_REVOKED:
		return ktv1.LogEventKind_LOG_EVENT_KIND_REVOCATION, nil
	case cardstoragev1.CardEventRecordKind_CARD_EVENT_RECORD_KIND_PUBLISHED:
		switch {
		case ev.GetKeyReset():
			return ktv1.LogEventKind_LOG_EVENT_KIND_RESET, nil
		case len(ev.GetPreviousCardId()) > 0:
			// The rotation rule refuses a rotation without the active card's endorsement.
			return ktv1.LogEventKind_LOG_EVENT_KIND_ENDORSED_ROTATION, nil
		}
		return ktv1.LogEventKind_LOG_EVENT_KIND_PUBLICATION, nil
	}
	return 0, fmt.Errorf("card: event %d has kind %s, which has no log entry", ev.GetSequence(), ev.GetKind())
}

// eventLeaf is the log entry of a card event.
func eventLeaf(ev *cardstoragev1.CardEventRecord) ([]byte, error) {
	kind, err := leafKind(ev)
	if err != nil {
		return nil, err
	}
	key := kt.MapKey(ev.GetAppId(), ev.GetIdentity())
	leaf := &ktv1.LogLeaf{
		Version:             kt.Version,
		MapKey:              key[:],
		Kind:                kind,
		CardId:              ev.GetCardId(),
		OccurredAtUnixNanos: ev.GetOccurredAt().AsTime().UnixNano(),
	}
	if kind == ktv1.LogEventKind_LOG_EVENT_KIND_ENDORSED_ROTATION {
		leaf.PreviousCardId = ev.GetPreviousCardId()
	}
	b, err := kt.EncodeLeaf(leaf)
	if err != nil {
		return nil, fmt.Errorf("card: log entry of event %d: %w", ev.GetSequence(), err)
	}
	return b, nil
}

// signWithLogKeys is the store's CheckpointSigner: it signs c with the log keys that sign, which the store read in its
// transaction (so that a rotation on another replica applies here at once).
func signWithLogKeys(c *kt.Checkpoint, keys []*cardstoragev1.LogKeyRecord) ([]byte, error) {
	signers, err := logSigners(keys)
	if err != nil {
		return nil, err
	}
	c.Origin = signers[0].Name()
	return kt.SignCheckpoint(c, signers...)
}

// PublishCheckpoint appends every card event not yet in the log, in transactions of
// up to maxAppendBatch events, each with its checkpoint, and returns the latest
// checkpoint. The background loop calls it every CheckpointInterval; a caller that
// needs a checkpoint now (the first start, a test) calls it directly.
func (s *Server) PublishCheckpoint(ctx context.Context) (*cardstoragev1.CheckpointRecord, error) {
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	for {
		cp, n, err := s.store.AppendLog(maxAppendBatch, s.now(), signWithLogKeys)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			s.log.Debug("checkpoint published", zap.Uint64("size", cp.GetSize()), zap.Int("appended", n))
		}
		if n < maxAppendBatch {
			return cp, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// GetCheckpoint implements CardService.
func (s *Server) GetCheckpoint(context.Context, *cardv1.GetCheckpointRequest) (*cardv1.GetCheckpointResponse, error) {
	cp, err := s.store.LatestCheckpoint()
	if err != nil {
		return nil, err
	}
	return &cardv1.GetCheckpointResponse{Checkpoint: cp.GetSignedNote(), Size: cp.GetSize()}, nil
}

// GetConsistencyProof implements CardService.
func (s *Server) GetConsistencyProof(_ context.Context, req *cardv1.GetConsistencyProofRequest) (*cardv1.GetConsistencyProofResponse, error) {
	if err := validConsistency(req); err != nil {
		return nil, err
	}
	proof, err := s.store.ConsistencyProof(req.GetFromSize(), req.GetToSize())
	if err != nil {
		return nil, err
	}
	return &cardv1.GetConsistencyProofResponse{Proof: proof}, nil
}

// GetInclusionProof implements CardService.
func (s *Server) GetInclusionProof(_ context.Context, req *cardv1.GetInclusionProofRequest) (*cardv1.GetInclusionProofResponse, error) {
	size := req.GetTreeSize()
	if size == 0 {
		cp, err := s.store.LatestCheckpoint()
		if err != nil {
			return nil, err
		}
		size = cp.GetSize()
	}
	if req.GetIndex() >= size {
		return nil, errs.OutOfRangef("index %d is not in a log of %d entries", req.GetIndex(), size)
	}
	leaf, proof, err := s.store.InclusionProof(req.GetIndex(), size)
	if err != nil {
		return nil, err
	}
	return &cardv1.GetInclusionProofResponse{Leaf: leaf, TreeSize: size, Proof: proof}, nil
}

// GetLogEntries implements CardService.
func (s *Server) GetLogEntries(_ context.Context, req *cardv1.GetLogEntriesRequest) (*cardv1.GetLogEntriesResponse, error) {
	count, err := validLogEntries(req)
	if err != nil {
		return nil, err
	}
	cp, err := s.store.LatestCheckpoint()
	if err != nil {
		return nil, err
	}
	if req.GetStart() >= cp.GetSize() {
		return nil, errs.OutOfRangef("start %d is past the log, which has %d entries at its latest checkpoint", req.GetStart(), cp.GetSize())
	}
	count = int(min(uint64(count), cp.GetSize()-req.GetStart()))
	entries, err := s.store.LogEntries(req.GetStart(), count)
	if err != nil {
		return nil, err
	}
	return &cardv1.GetLogEntriesResponse{Entries: entries}, nil
}

// SearchCardsWithProofs implements CardService.
func (s *Server) SearchCardsWithProofs(ctx context.Context, req *cardv1.SearchCardsWithProofsRequest) (*cardv1.SearchCardsWithProofsResponse, error) {
	p, ids, err := s.searchRequest(ctx, req.GetIdentities(), " (SearchCardsWithProofs shares it)")
	if err != nil {
		return nil, err
	}
	cp, proved, err := s.store.ProvedCards(p.AppID, ids)
	if err != nil {
		return nil, err
	}
	return &cardv1.SearchCardsWithProofsResponse{Checkpoint: cp.GetSignedNote(), Results: views(proved, provedView)}, nil
}

// provedView is the API's view of a lookup: its proof, and the card it names if any.
func provedView(pc ProvedCard) *cardv1.ProvedCard {
	r := &cardv1.ProvedCard{Proof: pc.Proof}
	if pc.Card != nil {
		r.Card = cardView(pc.Card)
	}
	return r
}
