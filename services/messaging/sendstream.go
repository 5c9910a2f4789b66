package messaging

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/errs/errstatus"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// SendStreamWindow is how many requests of one SendStream the server reads ahead of its
// replies: a client may have that many messages in flight.
const SendStreamWindow = 64

// streamSend is one request of a SendStream, checked and queued (ps) or refused (err).
type streamSend struct {
	id  string
	ps  *pendingSend
	err error
}

// SendStream implements MessagingService.
//
// One goroutine reads requests, checks them and queues them on the committer as Send
// does; this one waits for each in turn and replies, so replies keep the requests'
// order, and a reader at most SendStreamWindow requests ahead keeps the stream's
// memory bounded (gRPC's flow control holds the client back beyond that).
//
// When the service stops (Run's context ends) the stream drains: the reader takes no
// more requests, every request it took is committed (or refused) and answered, and
// then the stream ends with UNAVAILABLE. So every message stored has had its reply
// sent, and the client resends exactly those that got none.
func (s *Server) SendStream(stream grpc.BidiStreamingServer[messagingv1.SendStreamRequest, messagingv1.SendStreamResponse]) error {
	p, err := auth.Caller(stream.Context())
	if err != nil {
		return err
	}
	if err := s.sendStreams.take(p.AppID, p.Identity); err != nil {
		return err
	}
	defer s.sendStreams.give(p.AppID, p.Identity)
	const resume = "open a new stream and resend the requests that got no reply, with the same client_message_ids"
	ctx, end := context.WithCancelCause(stream.Context())
	defer end(nil)
	s.watchToken(ctx, p, resume, end)

	var (
		mu       sync.Mutex
		taken    int  // requests the reader took: each gets a reply unless the stream fails
		draining bool // the service is stopping: the reader takes no more
	)
	pending := make(chan streamSend, SendStreamWindow)
	go func() {
		defer close(pending)
		var last *request // the stream's request queued last: the next is queued after it
		for {
			req, err := stream.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					end(err)
				}
				return
			}
			mu.Lock()
			if draining {
				// Not taken: it gets no reply, and the client sends it again.
				mu.Unlock()
				return
			}
			taken++
			mu.Unlock()
			it := streamSend{id: req.GetSend().GetClientMessageId()}
			if it.err = s.tokenErr(ctx, p, false, resume); it.err == nil {
				it.ps, it.err = s.startSend(ctx, p, req.GetSend(), last)
			}
			if it.ps != nil && it.ps.r != nil {
				last = it.ps.r
			}
			select {
			case pending <- it:
			case <-ctx.Done():
				return
			}
			if it.err != nil && endsStream(it.err) {
				// Nothing after it may be stored before it: the client resends it first.
				return
			}
		}
	}()
	closing, replied := s.closing, 0
	for {
		if closing == nil {
			mu.Lock()
			done := replied == taken
			mu.Unlock()
			if done { // every request taken has its reply: a graceful stop need not wait for more
				return errs.Unavailablef("the messaging service is shutting down: %s", resume)
			}
		}
		var it streamSend
		select {
		case next, ok := <-pending:
			if !ok {
				return context.Cause(ctx)
			}
			it = next
		case <-ctx.Done(): // the token, while the client sends nothing
			return context.Cause(ctx)
		case <-closing:
			mu.Lock()
			draining = true
			mu.Unlock()
			closing = nil
			continue
		}
		var resp *messagingv1.SendResponse
		err := it.err
		if err == nil {
			resp, err = it.ps.result(ctx, s.commit)
		}
		out := &messagingv1.SendStreamResponse{ClientMessageId: it.id}
		if err == nil {
			out.Result = &messagingv1.SendStreamResponse_Sent{Sent: resp}
		} else if out.Result, err = s.sendStreamError(err); err != nil {
			if cause := context.Cause(ctx); cause != nil { // why the wait ended
				return cause
			}
			return err
		}
		if err := stream.Send(out); err != nil {
			return err
		}
		replied++
	}
}

// streamSlots counts the open SendStreams of each identity, up to max: each may hold
// SendStreamWindow requests in memory. Once the service stops it opens no more, and
// says when the last one has ended (drained), so that the committer runs until every
// stream has its replies.
type streamSlots struct {
	mu      sync.Mutex
	max     int
	open    map[string]int // app 0 identity
	total   int
	closing bool
	ended   chan struct{} // closed when closing and total is 0
}

func newStreamSlots(max int) *streamSlots {
	return &streamSlots{max: max, open: map[string]int{}, ended: make(chan struct{})}
}

func (s *streamSlots) take(app, identity string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return errs.Unavailablef("the messaging service is shutting down: open a send stream again in a moment")
	}
	k := key2(app, identity)
	if s.open[k] >= s.max {
		return errs.Exhaustedf("you have %d send streams open already, the maximum: send on one of them", s.max)
	}
	s.open[k]++
	s.total++
	return nil
}

func (s *streamSlots) give(app, identity string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key2(app, identity)
	if s.open[k]--; s.open[k] <= 0 {
		delete(s.open, k)
	}
	if s.total--; s.total == 0 && s.closing {
		close(s.ended)
	}
}

// drained refuses new streams from now on and returns a channel closed once every open
// one has ended.
func (s *streamSlots) drained() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closing {
		s.closing = true
		if s.total == 0 {
			close(s.ended)
		}
	}
	return s.ended
}

// sendStreamError turns the refusal of one message into its reply, or returns the
// error that ends the stream instead: the service failing or shutting down, the
// token no longer valid, the stream cancelled.
func (s *Server) sendStreamError(err error) (*messagingv1.SendStreamResponse_Error, error) {
	if endsStream(err) {
		return nil, err
	}
	code, _ := errstatus.Code(err)
	st, _ := errstatus.Status(err)
	pb := status.Convert(st).Proto()
	s.log.Debug("SendStream: message refused", zap.String("code", code.String()), zap.Error(err))
	return &messagingv1.SendStreamResponse_Error{Error: &messagingv1.SendError{
		Code: pb.GetCode(), Message: pb.GetMessage(), Details: pb.GetDetails(),
	}}, nil
}

// endsStream says whether err is not about one message but the stream's: the service
// failing or stopping, the token no longer valid, the stream cancelled. The reader stops
// at such an error, so that no later request is stored before the one it refused: the
// order a client resends in holds. When a batch fails in storage (a full disk, an I/O
// error, the database unreachable) while later requests of the stream are queued for
// the next batch, the committer fails those too (request.after).
func endsStream(err error) bool {
	code, known := errstatus.Code(err)
	switch {
	case !known, code == codes.Internal, code == codes.Unavailable, code == codes.Unauthenticated,
		code == codes.Canceled, code == codes.DeadlineExceeded, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return false
}

// tokenErr says why p's token no longer holds, or returns nil: it has expired, or
// (checked only when revocation is set and the server has Revocations) it was revoked,
// or revocations cannot be checked now (fail closed, as new calls do). resume tells
// the client what to do next.
func (s *Server) tokenErr(ctx context.Context, p *auth.Principal, revocation bool, resume string) error {
	if !p.ExpiresAt.IsZero() && !s.now().Before(p.ExpiresAt) {
		return errs.Unauthenticatedf("your access token expired at %s: get a fresh token, then %s",
			p.ExpiresAt.UTC().Format(time.RFC3339), resume)
	}
	if !revocation || s.cfg.Revocations == nil {
		return nil
	}
	err := s.cfg.Revocations.CheckRevoked(ctx, p.AppID, p.Identity, p.IssuedAt)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errs.ErrUnauthenticated):
		return errs.Unauthenticatedf("your access token was revoked: get a fresh token, then %s", resume)
	case errors.Is(err, errs.ErrUnavailable):
		return errs.Unavailablef("revocations cannot be checked now: later, %s", resume)
	}
	return err
}

// watchToken ends ctx (through end) once p's token expires or is revoked, until ctx
// ends.
func (s *Server) watchToken(ctx context.Context, p *auth.Principal, resume string, end context.CancelCauseFunc) {
	if p.ExpiresAt.IsZero() && s.cfg.Revocations == nil {
		return
	}
	go func() {
		var expiry <-chan time.Time
		if !p.ExpiresAt.IsZero() {
			t := time.NewTimer(p.ExpiresAt.Sub(s.now()))
			defer t.Stop()
			expiry = t.C
		}
		var check <-chan time.Time
		if s.cfg.Revocations != nil {
			t := time.NewTicker(RevocationCheck)
			defer t.Stop()
			check = t.C
		}
		for {
			select {
			case <-expiry:
				// The timer ran on the machine's clock; the token is checked on the
				// server's, which may be behind it: look again in a second.
				expiry = time.After(time.Second)
			case <-check:
			case <-ctx.Done():
				return
			}
			if err := s.tokenErr(ctx, p, true, resume); err != nil {
				end(err)
				return
			}
		}
	}()
}
