package sdk

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/umbra-e2ee/umbra/pkg/ident"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// NewClientMessageID returns a fresh idempotency key for Send: 128 random bits.
func NewClientMessageID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)
}

// SendTo encrypts data for peer (an identity; the user's own card is a recipient too)
// and sends it in their direct conversation. A send that fails with a transient error
// is retried with the same client message id, so it is stored once.
func (c *Client) SendTo(ctx context.Context, peer string, data []byte) (*messagingv1.SendResponse, error) {
	_, _, myCard, err := c.current()
	if err != nil {
		return nil, err
	}
	env, err := c.Encrypt(ctx, data, peer)
	if err != nil {
		return nil, err
	}
	return c.Send(ctx, &messagingv1.SendRequest{
		ConversationId:  peer,
		ClientMessageId: NewClientMessageID(),
		Header:          &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED, SenderCardId: myCard},
		Envelope:        env,
	})
}

// Send sends a prepared message, retrying with the same request, for up to a minute
// (or until ctx ends), the failures a Sender retries (retrySend): the server
// unavailable or its storage full, an internal error, a lost connection, and once an
// expired or revoked token, with a fresh one. The server's idempotency on
// client_message_id makes the retries safe: the message is stored once.
func (c *Client) Send(ctx context.Context, req *messagingv1.SendRequest) (*messagingv1.SendResponse, error) {
	client := messagingv1.NewMessagingServiceClient(c.conn)
	delay := 100 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	refreshed := false
	for {
		resp, err := client.Send(ctx, req)
		if err == nil || ctx.Err() != nil {
			return resp, err
		}
		retry, newToken := retrySend(err)
		if !retry || time.Now().After(deadline) || newToken && refreshed {
			return resp, err
		}
		if newToken {
			c.tok.invalidate()
			refreshed = true
			continue
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// retrySend says whether a send that failed with err may be made again as it is, with
// the same client_message_id, and whether the access token must be replaced first.
// Client.Send and the Sender retry the same failures: the server unavailable (its
// storage full, a restart), an internal error, a lost connection or a deadline of the
// server's, and an expired or revoked token.
func retrySend(err error) (retry, newToken bool) {
	switch status.Code(err) {
	case codes.Unauthenticated:
		return true, true
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.DeadlineExceeded:
		return true, false
	}
	return errors.Is(err, io.EOF), false
}

// History pages through a conversation's messages (see messagingv1.HistoryRequest).
func (c *Client) History(ctx context.Context, req *messagingv1.HistoryRequest) (*messagingv1.HistoryResponse, error) {
	return messagingv1.NewMessagingServiceClient(c.conn).History(ctx, req)
}

// OpenMessage decrypts an ENCRYPTED message with the user's keys (a group's with its
// epoch key, see Group.Decrypt) and checks it against its sender; a PLAINTEXT message
// is returned as it is.
func (c *Client) OpenMessage(ctx context.Context, m *messagingv1.Message) ([]byte, error) {
	if m.GetHeader().GetKind() == messagingv1.MessageKind_MESSAGE_KIND_PLAINTEXT {
		return m.GetEnvelope(), nil
	}
	if strings.HasPrefix(m.GetConversationId(), ident.GroupPrefix) {
		return c.openGroupMessage(ctx, m)
	}
	return c.Decrypt(ctx, m.GetEnvelope(), m.GetSender())
}

// Subscription options. The zero value starts live: only what is stored from now on.
type SubscribeOptions struct {
	// After resumes after this inbox sequence. nil starts live (unless FromStart); a
	// pointer to 0 replays everything still stored, as FromStart does. Unset and 0 are
	// different starts (see messagingv1.SubscribeRequest).
	After *uint64
	// FromStart replays everything still stored, then goes on live. It excludes an
	// After above 0.
	FromStart bool
	// Heartbeat is the heartbeat interval asked of the server; 0 is its default.
	Heartbeat time.Duration
}

// Subscribe delivers every item addressed to the user to handle, in order, until ctx
// ends or handle returns an error. It resumes by itself after a disconnect, from the
// last item handle accepted, so nothing is missed or delivered twice; an expired or
// revoked token is replaced by a fresh one from the TokenFunc. handle's error is
// returned as it is; so is a refusal that no retry can fix (a bad cursor, too many
// streams).
func (c *Client) Subscribe(ctx context.Context, opts SubscribeOptions, handle func(*messagingv1.SubscribeResponse) error) error {
	if opts.FromStart && opts.After != nil && *opts.After > 0 {
		return fmt.Errorf("sdk: subscribe: FromStart and After %d ask for two different starts", *opts.After)
	}
	client := messagingv1.NewMessagingServiceClient(c.conn)
	after := opts.After
	delay := 100 * time.Millisecond
	for {
		// Once an item (a heartbeat included) has arrived, after holds its cursor, and a
		// reconnection resumes there rather than from the start.
		req := &messagingv1.SubscribeRequest{AfterInboxSequence: after, FromStart: opts.FromStart && after == nil}
		if opts.Heartbeat > 0 {
			req.HeartbeatInterval = durationpb.New(opts.Heartbeat)
		}
		stream, err := client.Subscribe(ctx, req)
		for err == nil {
			var item *messagingv1.SubscribeResponse
			if item, err = stream.Recv(); err != nil {
				break
			}
			c.observeGroupEvent(item)
			if herr := handle(item); herr != nil {
				return herr
			}
			seq := item.GetInboxSequence()
			after = &seq
			delay = 100 * time.Millisecond
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch status.Code(err) {
		case codes.Unauthenticated:
			c.tok.invalidate()
		case codes.Unavailable, codes.Internal, codes.Unknown, codes.DeadlineExceeded:
		default:
			if !errors.Is(err, io.EOF) {
				return fmt.Errorf("sdk: subscribe: %w", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}
