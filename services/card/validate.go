package card

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/umbra-e2ee/umbra/internal/page"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// Limits on requests (card.proto states them).
const (
	// MaxSearchIdentities bounds the distinct identities of one SearchCards call.
	MaxSearchIdentities = 1000
	// MaxLookupIdentities bounds the distinct identities of one LookupActiveCards call.
	MaxLookupIdentities = 10000
	// DefaultHistoryPage and MaxHistoryPage bound ListCardHistory pages.
	DefaultHistoryPage = 100
	MaxHistoryPage     = 1000
	// DefaultEventPage and MaxEventPage bound ListCardEvents pages.
	DefaultEventPage = 1000
	MaxEventPage     = 10000
	// DefaultLogEntries and MaxLogEntries bound GetLogEntries.
	DefaultLogEntries = 100
	MaxLogEntries     = 1000
)

// validPublish checks the shape of a PublishCardRequest before anything is verified, so
// that each missing or oversized part gets its own message.
func validPublish(req *cardv1.PublishCardRequest) error {
	switch {
	case len(req.GetContent()) == 0:
		return errs.Invalidf("content is empty: send the exact bytes of an umbra.envelope.v1.CardContent")
	case len(req.GetContent()) > e2ee.MaxCardContentSize:
		return errs.TooLargef("content is %d bytes; a card's content is at most %d", len(req.GetContent()), e2ee.MaxCardContentSize)
	case len(req.GetSelfSignature()) == 0:
		return errs.Invalidf("self_signature is empty: send the Ed25519 signature of the content by its signing key")
	case len(req.GetResetGrant()) > auth.MaxResetGrantSize:
		return errs.TooLargef("reset_grant is %d bytes; a reset grant is at most %d", len(req.GetResetGrant()), auth.MaxResetGrantSize)
	}
	if e := req.GetEndorsement(); e != nil {
		switch {
		case len(e.GetContent()) == 0:
			return errs.Invalidf("endorsement.content is empty: send the exact bytes of an umbra.envelope.v1.RotationEndorsementContent, or no endorsement")
		case len(e.GetContent()) > e2ee.MaxEndorsementSize:
			return errs.TooLargef("endorsement.content is %d bytes; at most %d", len(e.GetContent()), e2ee.MaxEndorsementSize)
		case len(e.GetSignature()) != ed25519.SignatureSize:
			return errs.Invalidf("endorsement.signature is %d bytes; want %d", len(e.GetSignature()), ed25519.SignatureSize)
		}
	}
	return nil
}

// refused turns a pkg/e2ee verification failure into INVALID_ARGUMENT, keeping its
// message: "card refused (bad signature): card self-signature does not verify".
func refused(what string, err error) error {
	var e *e2ee.Error
	if !errors.As(err, &e) {
		return err
	}
	if errors.Is(err, e2ee.ErrTooLarge) {
		return errs.TooLargef("%s refused: %s", what, e.Msg)
	}
	return errs.Invalidf("%s refused (%s): %s", what, e.Kind, e.Msg)
}

// validCardID checks that field holds a card id.
func validCardID(field string, id []byte) error {
	switch len(id) {
	case e2ee.CardIDSize:
		return nil
	case 0:
		return errs.Invalidf("%s is empty: want a card id (32 bytes, the SHA-256 of the card's content)", field)
	}
	return errs.Invalidf("%s is %d bytes; a card id is %d (the SHA-256 of the card's content)", field, len(id), e2ee.CardIDSize)
}

// cardIDString writes a card id the way REST paths take it: URL-safe base64, unpadded.
func cardIDString(id []byte) string {
	if len(id) == 0 {
		return "none"
	}
	return base64.RawURLEncoding.EncodeToString(id)
}

// validIdentities checks a batch of user identities (the request field is field) and
// returns them without duplicates, in first-seen order. max bounds the distinct ones.
func validIdentities(field string, ids []string, max int) ([]string, error) {
	if len(ids) == 0 {
		return nil, errs.Invalidf("%s is empty: send 1 to %d user identities", field, max)
	}
	seen := make(map[string]struct{}, min(len(ids), max))
	out := make([]string, 0, min(len(ids), max))
	for i, id := range ids {
		if err := ident.ValidUser(field, id); err != nil {
			// Validate again to name the element; only failures pay for the formatting.
			return nil, ident.ValidUser(fmt.Sprintf("%s[%d]", field, i), id)
		}
		if _, dup := seen[id]; dup {
			continue
		}
		if len(out) == max {
			return nil, errs.Invalidf("%s has more than %d distinct identities; at most %d in one call", field, max, max)
		}
		seen[id] = struct{}{}
		out = append(out, id)
	}
	return out, nil
}

// History page tokens are opaque to clients: URL-safe base64 of a version byte, the
// sequence number of the last card returned, and 8 bytes of SHA-256 of the identity
// listed, so a token cannot be replayed against another identity's listing.
const pageTokenVersion = 1

func historyToken(identity string, seq uint64) string {
	b := []byte{pageTokenVersion}
	b = binary.BigEndian.AppendUint64(b, seq)
	h := sha256.Sum256([]byte(identity))
	return base64.RawURLEncoding.EncodeToString(append(b, h[:8]...))
}

// parseHistoryToken returns the sequence to continue before, or 0 for the first page.
func parseHistoryToken(identity, tok string) (uint64, error) {
	if tok == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) != 17 || b[0] != pageTokenVersion {
		return 0, page.ErrMalformedToken
	}
	h := sha256.Sum256([]byte(identity))
	if string(b[9:]) != string(h[:8]) {
		return 0, errs.Invalidf("page_token belongs to another identity's history: start again without a page_token")
	}
	seq := binary.BigEndian.Uint64(b[1:9])
	if seq == 0 {
		return 0, page.ErrMalformedToken
	}
	return seq, nil
}

// validConsistency checks the sizes of a consistency proof request; that to_size is
// within the log is the store's check.
func validConsistency(req *cardv1.GetConsistencyProofRequest) error {
	from, to := req.GetFromSize(), req.GetToSize()
	switch {
	case from == 0:
		return errs.Invalidf("from_size is 0: every log is consistent with the empty log; ask from the size of a checkpoint you hold")
	case from > to:
		return errs.Invalidf("from_size %d is larger than to_size %d: a log only grows; ask from the older checkpoint's size to the newer's", from, to)
	}
	return nil
}

// validLogEntries checks a GetLogEntries request and returns how many entries to read
// at most.
func validLogEntries(req *cardv1.GetLogEntriesRequest) (int, error) {
	switch count := req.GetCount(); {
	case count == 0:
		return DefaultLogEntries, nil
	case count > MaxLogEntries:
		return 0, errs.Invalidf("count %d is more than %d entries: page through the log", count, MaxLogEntries)
	default:
		return int(count), nil
	}
}

// maxLogKeyArg bounds RetireLogKey's key: a verifier key is an origin (a key name) and
// under 60 more characters.
const maxLogKeyArg = 1024

// validRetireLogKey checks that a RetireLogKey request names a key: its id, or its
// verifier key.
func validRetireLogKey(req *cardv1.RetireLogKeyRequest) error {
	key := req.GetKey()
	switch {
	case key == "":
		return errs.Invalidf("key is empty: name the log key to retire by its key id or its verifier key (umbra card log-key lists them)")
	case len(key) > maxLogKeyArg:
		return errs.Invalidf("key of %d bytes, at most %d: a log key id or verifier key", len(key), maxLogKeyArg)
	case strings.Contains(key, "+"):
		if _, err := note.NewVerifier(key); err != nil {
			return errs.Invalidf("key %q is not a signed-note verifier key (<origin>+<hash>+<key>): %v", key, err)
		}
	case strings.ContainsFunc(key, func(r rune) bool { return !strings.ContainsRune("abcdefghijklmnopqrstuvwxyz234567", r) }):
		return errs.Invalidf("key %q is neither a log key id (lower-case base32) nor a verifier key", key)
	}
	return nil
}
