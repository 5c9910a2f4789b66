package group

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/umbra-e2ee/umbra/internal/page"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// Limits on requests (group.proto states them).
const (
	MaxInitialMembers   = 1000
	MaxAddMembers       = 1000
	MaxKeysPerRequest   = 500
	MaxSharesPerRequest = 500
	DefaultPage         = 100
	MaxPage             = 1000
	DefaultMemberPage   = 10000
	MaxMemberPage       = 10000
	MaxCommitContent    = 1024
	SignatureSize       = 64
	CardIDSize          = 32
	// The sizes of a WrappedEpochKey (envelope.proto): enc per suite, and the
	// ciphertext of a 32-byte key with its 16-byte tag.
	encSizeHybrid     = 1120
	encSizeX25519     = 32
	wrappedCipherSize = 48
	MinInvitationTTL  = time.Minute
	MaxInvitationTTL  = 30 * 24 * time.Hour
	MinRotationPeriod = time.Minute
	MaxRotationPeriod = 365 * 24 * time.Hour
	MinMessageLimit   = 100
)

func validGroupID(id string) error { return ident.ValidGroup("group_id", id) }

// validIdentities checks a list of user identities and returns it without duplicates,
// in request order.
func validIdentities(field string, ids []string, min, max int) ([]string, error) {
	if len(ids) < min {
		return nil, errs.Invalidf("%s is empty: name at least %d user identity", field, min)
	}
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for i, id := range ids {
		if err := ident.ValidUser(field+"["+strconv.Itoa(i)+"]", id); err != nil {
			return nil, err
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	if len(out) > max {
		return nil, errs.Invalidf("%s names %d identities; at most %d per call", field, len(out), max)
	}
	return out, nil
}

// Page tokens are opaque to clients: URL-safe base64 of "v1|" and a position.
func pageToken(parts ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1|" + strings.Join(parts, "|")))
}

// validAppGroup checks the app id and the group id an internal call names.
func validAppGroup(app, group string) error {
	if err := ident.ValidApp("app_id", app); err != nil {
		return err
	}
	return validGroupID(group)
}

// pageRequest is what a list call asks for: a page of some size, after its token.
type pageRequest interface {
	GetPageSize() uint32
	GetPageToken() string
}

// readPage checks req's page size (def for 0, at most max) and then its page token, of
// n parts (nil for the first page).
func readPage(req pageRequest, def, max, n int) (int, []string, error) {
	size, err := page.Size(req.GetPageSize(), def, max)
	if err != nil {
		return 0, nil, err
	}
	tok, err := parsePageToken(req.GetPageToken(), n)
	if err != nil {
		return 0, nil, err
	}
	return size, tok, nil
}

// readUintPage is readPage for a token of one number, the position the page starts
// after: first for the first page.
func readUintPage(req pageRequest, def, max int, first uint64) (int, uint64, error) {
	size, err := page.Size(req.GetPageSize(), def, max)
	if err != nil {
		return 0, 0, err
	}
	after, err := uintPageToken(req.GetPageToken(), first)
	if err != nil {
		return 0, 0, err
	}
	return size, after, nil
}

// parsePageToken returns the n parts of a token (nil for an empty token).
func parsePageToken(tok string, n int) ([]string, error) {
	if tok == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	parts := strings.Split(string(b), "|")
	if err != nil || len(parts) != n+1 || parts[0] != "v1" {
		return nil, page.ErrMalformedToken
	}
	return parts[1:], nil
}

// uintPageToken returns the number in a one-part page token, or def for no token.
func uintPageToken(tok string, def uint64) (uint64, error) {
	parts, err := parsePageToken(tok, 1)
	if err != nil || parts == nil {
		return def, err
	}
	n, err := strconv.ParseUint(parts[0], 10, 64)
	if err != nil {
		return 0, page.ErrMalformedToken
	}
	return n, nil
}

func validMode(field string, m groupv1.EncryptionMode) error {
	switch m {
	case groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED, groupv1.EncryptionMode_ENCRYPTION_MODE_OPTIONAL, groupv1.EncryptionMode_ENCRYPTION_MODE_OFF:
		return nil
	case groupv1.EncryptionMode_ENCRYPTION_MODE_UNSPECIFIED:
		return errs.Invalidf("%s is unspecified: choose REQUIRED, OPTIONAL or OFF", field)
	}
	return errs.Invalidf("%s %d is not an encryption mode", field, m)
}

func validVisibility(field string, v groupv1.HistoryVisibility) error {
	switch v {
	case groupv1.HistoryVisibility_HISTORY_VISIBILITY_SINCE_JOIN, groupv1.HistoryVisibility_HISTORY_VISIBILITY_SHARED:
		return nil
	case groupv1.HistoryVisibility_HISTORY_VISIBILITY_UNSPECIFIED:
		return errs.Invalidf("%s is unspecified: choose SINCE_JOIN or SHARED", field)
	}
	return errs.Invalidf("%s %d is not a history visibility", field, v)
}

// validRotationPolicy checks a policy and returns its period (0 for none).
func validRotationPolicy(p *groupv1.RotationPolicy) (time.Duration, error) {
	var period time.Duration
	if d := p.GetPeriod(); d != nil {
		if err := d.CheckValid(); err != nil {
			return 0, errs.Invalidf("rotation_policy.period is not a valid duration: %v", err)
		}
		period = d.AsDuration()
		if period != 0 && (period < MinRotationPeriod || period > MaxRotationPeriod) {
			return 0, errs.Invalidf("rotation_policy.period %s is out of range: 0 for none, otherwise %s to %s", period, MinRotationPeriod, MaxRotationPeriod)
		}
	}
	if n := p.GetMaxMessagesPerEpoch(); n != 0 && n < MinMessageLimit {
		return 0, errs.Invalidf("rotation_policy.max_messages_per_epoch %d is too low: 0 for no limit, otherwise at least %d", n, MinMessageLimit)
	}
	return period, nil
}

func durationOrNil(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// validWrappedKey checks the shape of a wrapped key; the suite is checked against the
// recipient card at commit time.
func validWrappedKey(field string, k *envelopev1.WrappedEpochKey) error {
	switch {
	case k == nil:
		return errs.Invalidf("%s is missing", field)
	case len(k.GetRecipientCardId()) != CardIDSize:
		return errs.Invalidf("%s.recipient_card_id is %d bytes; a card id is %d", field, len(k.GetRecipientCardId()), CardIDSize)
	case len(k.GetEnc()) != encSizeHybrid && len(k.GetEnc()) != encSizeX25519:
		return errs.Invalidf("%s.enc is %d bytes; an HPKE encapsulated key is %d (SUITE_MLKEM768_X25519) or %d (SUITE_X25519)", field, len(k.GetEnc()), encSizeHybrid, encSizeX25519)
	case len(k.GetCiphertext()) != wrappedCipherSize:
		return errs.Invalidf("%s.ciphertext is %d bytes; a wrapped 32-byte key is %d", field, len(k.GetCiphertext()), wrappedCipherSize)
	}
	return nil
}

// encSize is the encapsulated key size of a suite, 0 for an unknown one.
func encSize(s envelopev1.Suite) int {
	switch s {
	case envelopev1.Suite_SUITE_MLKEM768_X25519:
		return encSizeHybrid
	case envelopev1.Suite_SUITE_X25519:
		return encSizeX25519
	}
	return 0
}

// validMemberKeys checks a list of wrapped keys, each identity at most once.
func validMemberKeys(field string, keys []*groupv1.MemberKey, min, max int) error {
	if len(keys) < min {
		return errs.Invalidf("%s is empty: send 1 to %d wrapped keys", field, max)
	}
	if len(keys) > max {
		return errs.Invalidf("%s holds %d keys; at most %d per request (stage larger commits with StageEpochKeys)", field, len(keys), max)
	}
	seen := make(map[string]bool, len(keys))
	for i, k := range keys {
		f := field + "[" + strconv.Itoa(i) + "]"
		if err := ident.ValidUser(f+".identity", k.GetIdentity()); err != nil {
			return err
		}
		if seen[k.GetIdentity()] {
			return errs.Invalidf("%s.identity %s appears twice: one key per member", f, k.GetIdentity())
		}
		seen[k.GetIdentity()] = true
		if err := validWrappedKey(f+".wrapped_key", k.GetWrappedKey()); err != nil {
			return err
		}
	}
	return nil
}

// validUploadID checks an upload id (26 lower-case base32 characters), if one is given:
// empty is none.
func validUploadID(id string) error {
	if id != "" && (len(id) != uploadIDLen || !ident.IsBase32(id)) {
		return errs.Invalidf("upload_id %q is malformed: pass the upload_id StageEpochKeys returned", id)
	}
	return nil
}
