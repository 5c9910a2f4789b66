package messaging

import (
	"crypto/sha256"
	"encoding/base32"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/umbra-e2ee/umbra/internal/refusal"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

const (
	// directPrefix starts every direct conversation id; 32 base32 characters follow,
	// as in identities.
	directPrefix = "d_"
	directLen    = len(directPrefix) + 32
	// directLabel separates the hash of a direct conversation id from every other
	// hash of the same inputs.
	directLabel = "umbra/messaging/v1/direct-conversation"
)

// b32 is unpadded lower-case base32, the alphabet of Umbra's ids.
var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

const (
	kindDirect = messagingstoragev1.ConversationRecordKind_CONVERSATION_RECORD_KIND_DIRECT
	kindGroup  = messagingstoragev1.ConversationRecordKind_CONVERSATION_RECORD_KIND_GROUP
)

// directID is the id of the direct conversation of two identities of an app: the same
// whichever of them asks, and different in every app.
func directID(app, a, b string) string {
	if b < a {
		a, b = b, a
	}
	h := sha256.New()
	for _, part := range []string{directLabel, app, a, b} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return directPrefix + b32.EncodeToString(h.Sum(nil)[:20])
}

// target is a conversation a request names, resolved for its caller.
type target struct {
	// id is the canonical id: "d_..." or "g_...".
	id   string
	kind messagingstoragev1.ConversationRecordKind
	// peer and participants (sorted) are set for a direct conversation.
	peer         string
	participants []string
}

// validConversationShape checks that id has the shape of a canonical conversation id.
func validConversationShape(id string) error {
	if strings.HasPrefix(id, ident.GroupPrefix) {
		return ident.ValidGroup("conversation_id", id)
	}
	body, ok := strings.CutPrefix(id, directPrefix)
	if !ok || len(id) != directLen || !ident.IsBase32(body) {
		return errs.Invalidf("conversation_id %q is malformed: a direct conversation id is %q and 32 base32 characters", refusal.Truncate(id), directPrefix)
	}
	return nil
}

// resolve turns a request's conversation_id into the conversation, and checks that the
// caller takes part in it if it is a direct one. Group membership is the group
// service's to decide, later.
func (s *Server) resolve(p *auth.Principal, id string) (target, error) {
	switch {
	case strings.HasPrefix(id, ident.UserPrefix):
		if err := ident.ValidUser("conversation_id", id); err != nil {
			return target{}, err
		}
		if id == p.Identity {
			return target{}, errs.Invalidf("conversation_id is your own identity: a direct conversation is with another user")
		}
		return target{
			id:           directID(p.AppID, p.Identity, id),
			kind:         kindDirect,
			peer:         id,
			participants: sortedPair(p.Identity, id),
		}, nil
	case strings.HasPrefix(id, ident.GroupPrefix):
		if err := ident.ValidGroup("conversation_id", id); err != nil {
			return target{}, err
		}
		return target{id: id, kind: kindGroup}, nil
	case strings.HasPrefix(id, directPrefix):
		if err := validConversationShape(id); err != nil {
			return target{}, err
		}
		// An unknown conversation and another pair's conversation get the same answer:
		// direct ids can be computed by anyone, and whether two users talk is theirs.
		refused := errs.Permissionf("you take part in no conversation %s: name a peer (u_...) to start one", id)
		rec, err := s.store.Conversation(p.AppID, id)
		if notFound(err) {
			return target{}, refused
		}
		if err != nil {
			return target{}, err
		}
		parts := rec.GetParticipants()
		if rec.GetKind() != kindDirect || len(parts) != 2 || !slices.Contains(parts, p.Identity) {
			return target{}, refused
		}
		peer := parts[0]
		if peer == p.Identity {
			peer = parts[1]
		}
		return target{id: id, kind: kindDirect, peer: peer, participants: parts}, nil
	case id == "":
		return target{}, errs.Invalidf("conversation_id is empty: name a peer (u_...), a direct conversation (d_...) or a group (g_...)")
	}
	return target{}, errs.Invalidf("conversation_id %q is neither a user identity (u_...), a direct conversation (d_...) nor a group (g_...)", refusal.Truncate(id))
}

func sortedPair(a, b string) []string {
	if b < a {
		a, b = b, a
	}
	return []string{a, b}
}

func sortedKeys(m map[string]struct{}) []string {
	return slices.Sorted(maps.Keys(m))
}

func itoa(i int) string { return strconv.Itoa(i) }
