package messaging

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/umbra-e2ee/umbra/internal/page"
	"github.com/umbra-e2ee/umbra/internal/refusal"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
	messagingstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/messaging/v1"
)

// Limits on requests (messaging.proto states them).
const (
	// MaxClientMessageIDLen and MaxEventIDLen bound the idempotency keys, in bytes.
	MaxClientMessageIDLen = 128
	MaxEventIDLen         = 128
	// MaxEventTypeLen bounds an event's type name, and MaxEventPayload its payload.
	MaxEventTypeLen = 256
	MaxEventPayload = 64 << 10
	// MaxEventRecipients bounds the distinct recipients of one PublishEvent.
	MaxEventRecipients = 10000
	// SenderCardIDLen is the size of a card id (SHA-256).
	SenderCardIDLen = 32
	// DefaultHistoryPage and MaxHistoryPage bound History pages, and MaxHistoryBytes
	// their envelopes.
	DefaultHistoryPage = 50
	MaxHistoryPage     = 500
	MaxHistoryBytes    = 2 << 20
	// DefaultConversationPage and MaxConversationPage bound ListConversations pages.
	DefaultConversationPage = 100
	MaxConversationPage     = 1000
	// DefaultHeartbeat is a stream's heartbeat interval unless the request sets one
	// between MinHeartbeat and MaxHeartbeat.
	DefaultHeartbeat = 15 * time.Second
	MinHeartbeat     = time.Second
	MaxHeartbeat     = 5 * time.Minute
)

// validKey checks an idempotency key: 1 to max bytes of UTF-8.
func validKey(field, s string, max int) error {
	switch {
	case s == "":
		return errs.Invalidf("%s is empty: send 1 to %d bytes of UTF-8 that name it for retries (a UUID is a good choice)", field, max)
	case len(s) > max:
		return errs.Invalidf("%s is %d bytes; at most %d", field, len(s), max)
	case !utf8.ValidString(s):
		return errs.Invalidf("%s is not valid UTF-8", field)
	}
	return nil
}

// storedKinds maps the API's message kinds to the stored ones; UNSPECIFIED and unknown
// values are missing.
var storedKinds = map[messagingv1.MessageKind]messagingstoragev1.StoredMessageKind{
	messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED: messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_ENCRYPTED,
	messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT: messagingstoragev1.StoredMessageKind_STORED_MESSAGE_KIND_PLAINTEXT,
}

// validHeader checks the rules of MessageHeader that do not depend on the
// conversation.
func validHeader(h *messagingv1.MessageHeader) error {
	if h == nil {
		return errs.Invalidf("header is missing: set header.kind to MESSAGE_KIND_ENCRYPTED or MESSAGE_KIND_PLAINTEXT")
	}
	kind := h.GetKind()
	if _, ok := storedKinds[kind]; !ok {
		return errs.Invalidf("header.kind is %v: want MESSAGE_KIND_ENCRYPTED or MESSAGE_KIND_PLAINTEXT", kind)
	}
	n := len(h.GetSenderCardId())
	switch {
	case kind == messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT && h.GetEpoch() != 0:
		return errs.Invalidf("header.epoch is %d: a PLAINTEXT message carries no epoch (0)", h.GetEpoch())
	case kind == messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT && n != 0:
		return errs.Invalidf("header.sender_card_id is %d bytes: a PLAINTEXT message names no card (empty)", n)
	case kind == messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED && n != SenderCardIDLen:
		return errs.Invalidf("header.sender_card_id is %d bytes: an ENCRYPTED message names the sender's card that signed it (%d bytes)", n, SenderCardIDLen)
	}
	return nil
}

// validEventType checks a full protobuf message name: dot-separated identifiers.
func validEventType(s string) error {
	switch {
	case s == "":
		return errs.Invalidf("type is empty: name the payload's protobuf message type, such as \"umbra.group.v1.GroupEvent\"")
	case len(s) > MaxEventTypeLen:
		return errs.Invalidf("type is %d bytes; at most %d", len(s), MaxEventTypeLen)
	}
	for _, part := range strings.Split(s, ".") {
		if part == "" || part[0] >= '0' && part[0] <= '9' || strings.IndexFunc(part, notIdentChar) >= 0 {
			return errs.Invalidf("type %q is not a full protobuf message name (dot-separated identifiers)", refusal.Truncate(s))
		}
	}
	return nil
}

func notIdentChar(c rune) bool {
	return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_')
}

// validRecipients checks PublishEvent's recipients and returns them sorted, without
// duplicates.
func validRecipients(ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, errs.Invalidf("recipients is empty: send 1 to %d user identities", MaxEventRecipients)
	}
	seen := make(map[string]struct{}, min(len(ids), MaxEventRecipients))
	for i, id := range ids {
		if _, dup := seen[id]; dup {
			continue
		}
		if err := ident.ValidUser("recipients", id); err != nil {
			return nil, ident.ValidUser("recipients["+itoa(i)+"]", id)
		}
		if len(seen) == MaxEventRecipients {
			return nil, errs.Invalidf("recipients has more than %d distinct identities; at most %d in one event", MaxEventRecipients, MaxEventRecipients)
		}
		seen[id] = struct{}{}
	}
	return sortedKeys(seen), nil
}

// validSubscribeStart refuses a SubscribeRequest that asks for two different starts.
func validSubscribeStart(req *messagingv1.SubscribeRequest) error {
	if req.GetFromStart() && req.GetAfterInboxSequence() > 0 {
		return errs.Invalidf("from_start and after_inbox_sequence %d ask for two different starts: send one of them", req.GetAfterInboxSequence())
	}
	return nil
}

// heartbeatInterval returns the interval a SubscribeRequest asks for.
func heartbeatInterval(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return DefaultHeartbeat, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, errs.Invalidf("heartbeat_interval: %v", err)
	}
	switch v := d.AsDuration(); {
	case v == 0:
		return DefaultHeartbeat, nil
	case v < MinHeartbeat || v > MaxHeartbeat:
		return 0, errs.Invalidf("heartbeat_interval %s is out of range: between %s and %s (0 for %s)", v, MinHeartbeat, MaxHeartbeat, DefaultHeartbeat)
	default:
		return v, nil
	}
}

// History page tokens are opaque to clients: URL-safe base64 of a version byte, the
// direction, the sequence the next page continues from, and 8 bytes of SHA-256 of the
// conversation id, so that a token cannot be replayed against another conversation.
const historyTokenVersion = 1

type historyCursor struct {
	forward bool
	// from is the sequence the page continues after (forwards) or before (backwards).
	from uint64
}

func historyToken(conv string, c historyCursor) string {
	b := []byte{historyTokenVersion, 0}
	if c.forward {
		b[1] = 1
	}
	b = binary.BigEndian.AppendUint64(b, c.from)
	h := sha256.Sum256([]byte(conv))
	return base64.RawURLEncoding.EncodeToString(append(b, h[:8]...))
}

func parseHistoryToken(conv, tok string) (historyCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) != 18 || b[0] != historyTokenVersion || b[1] > 1 {
		return historyCursor{}, page.ErrMalformedToken
	}
	h := sha256.Sum256([]byte(conv))
	if string(b[10:]) != string(h[:8]) {
		return historyCursor{}, errs.Invalidf("page_token belongs to another conversation: start again without a page_token")
	}
	return historyCursor{forward: b[1] == 1, from: binary.BigEndian.Uint64(b[2:10])}, nil
}

// ListConversations page tokens: URL-safe base64 of a version byte and the last
// conversation id listed.
const listTokenVersion = 1

func listToken(lastID string) string {
	return base64.RawURLEncoding.EncodeToString(append([]byte{listTokenVersion}, lastID...))
}

func parseListToken(tok string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 2 || b[0] != listTokenVersion || validConversationShape(string(b[1:])) != nil {
		return "", page.ErrMalformedToken
	}
	return string(b[1:]), nil
}
