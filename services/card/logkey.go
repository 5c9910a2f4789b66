package card

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/mod/sumdb/note"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// The key transparency log's keys and their rotation (docs/operations.md, "Rotating
// the log key"). A rotation keeps the log (its origin, entries and checkpoints) and
// changes only who signs: RotateLogKey adds a key of the same origin, and from then on
// both keys sign every checkpoint (a signed note carries several signatures, and a
// verifier ignores those of keys it does not know), so clients that know either key
// keep working while the operator ships the new one; RetireLogKey then makes the old
// one stop signing. Clients keep checking each checkpoint's consistency with the last
// one they saw, whichever key signed it.

// logSigners returns the signers of the log keys that sign, oldest first.
func logSigners(keys []*cardstoragev1.LogKeyRecord) ([]*kt.LogSigner, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("card: the key transparency log has no key that signs")
	}
	out := make([]*kt.LogSigner, len(keys))
	for i, k := range keys {
		signer, err := kt.NewLogSigner(k.GetOrigin(), k.GetSeed())
		if err != nil {
			return nil, fmt.Errorf("card: stored log key %s: %w", k.GetKeyId(), err)
		}
		out[i] = signer
	}
	return out, nil
}

// logKeyView is a log key as GetLogKey lists it.
func logKeyView(rec *cardstoragev1.LogKeyRecord) *cardv1.LogKey {
	vkey, err := note.NewEd25519VerifierKey(rec.GetOrigin(), ed25519.PublicKey(rec.GetPublicKey()))
	if err != nil {
		vkey = "" // a stored key that is not a valid Ed25519 key: listed without one
	}
	return &cardv1.LogKey{VerifierKey: vkey, KeyId: rec.GetKeyId(), CreatedAt: rec.GetCreatedAt(), RetiredAt: rec.GetRetiredAt()}
}

// verifierKeys is the verifier key of each of recs, for the log.
func verifierKeys(recs []*cardstoragev1.LogKeyRecord) []string {
	return views(recs, func(r *cardstoragev1.LogKeyRecord) string { return logKeyView(r).GetVerifierKey() })
}

// GetLogKey implements CardService.
func (s *Server) GetLogKey(context.Context, *cardv1.GetLogKeyRequest) (*cardv1.GetLogKeyResponse, error) {
	keys, err := s.store.LogKeys()
	if err != nil {
		return nil, err
	}
	signing := signingLogKeys(keys)
	if len(signing) == 0 {
		return nil, errs.Damagedf("card store: the key transparency log has no key that signs")
	}
	newest := signing[len(signing)-1]
	return &cardv1.GetLogKeyResponse{Origin: s.origin, VerifierKey: logKeyView(newest).GetVerifierKey(), PublicKey: newest.GetPublicKey(), Keys: views(keys, logKeyView)}, nil
}

// RotateLogKey implements CardService.
func (s *Server) RotateLogKey(context.Context, *cardv1.RotateLogKeyRequest) (*cardv1.RotateLogKeyResponse, error) {
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	next, err := newLogKey(s.rand, s.origin, s.now())
	if err != nil {
		return nil, err
	}
	cp, err := s.store.AddLogKey(next, signWithLogKeys)
	if err != nil {
		return nil, err
	}
	keys, err := s.store.LogKeys()
	if err != nil {
		return nil, err
	}
	view := logKeyView(next)
	s.log.Info("key transparency log key rotation started: the new key signs every checkpoint beside the current one",
		zap.String("verifier_key", view.GetVerifierKey()), zap.Strings("signing", verifierKeys(signingLogKeys(keys))))
	return &cardv1.RotateLogKeyResponse{Key: view, Keys: views(keys, logKeyView), Checkpoint: cp.GetSignedNote()}, nil
}

// RetireLogKey implements CardService.
func (s *Server) RetireLogKey(_ context.Context, req *cardv1.RetireLogKeyRequest) (*cardv1.RetireLogKeyResponse, error) {
	if err := validRetireLogKey(req); err != nil {
		return nil, err
	}
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	keys, err := s.store.LogKeys()
	if err != nil {
		return nil, err
	}
	id := req.GetKey()
	if strings.Contains(id, "+") {
		id = ""
		for _, k := range keys {
			if logKeyView(k).GetVerifierKey() == req.GetKey() {
				id = k.GetKeyId()
			}
		}
		if id == "" {
			return nil, errs.NotFoundf("the key transparency log has no key %s", req.GetKey())
		}
	}
	retired, cp, err := s.store.RetireLogKey(id, s.now(), signWithLogKeys)
	if err != nil {
		return nil, err
	}
	if keys, err = s.store.LogKeys(); err != nil {
		return nil, err
	}
	view := logKeyView(retired)
	s.log.Info("key transparency log key retired: it signs no more checkpoints, and its private key is erased",
		zap.String("verifier_key", view.GetVerifierKey()), zap.Strings("signing", verifierKeys(signingLogKeys(keys))))
	return &cardv1.RetireLogKeyResponse{Key: view, Keys: views(keys, logKeyView), Checkpoint: cp.GetSignedNote()}, nil
}
