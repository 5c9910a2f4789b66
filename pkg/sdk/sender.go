package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// MaxSenderWindow is the most messages a Sender keeps ahead of their replies: as many
// as the server reads ahead on one stream.
const MaxSenderWindow = 64

// Sender sends many messages over one SendStream, up to a window of them ahead of their
// replies, for an app that sends a lot (a bot, a bridge, a busy device); Client.Send
// makes a call per message and waits for each. Messages are stored in the order Send
// was called. After a disconnect the Sender reconnects by itself and resends, with the
// same client_message_ids, every message that had no reply, so each is stored once; an
// expired or revoked token is replaced from the TokenFunc. A message the server refuses
// gets its error in Pending.Wait, as Client.Send would have returned it, and the others
// go on.
type Sender struct {
	c      *Client
	slots  chan struct{} // one per message in flight
	queue  chan *Pending
	closed chan struct{} // closed by Close: no more Sends
	once   sync.Once
	done   chan struct{} // closed when run returns
	err    error         // why run returned, set before done closes

	// The run goroutine's own: the messages sent or to be resent, in order, without a
	// reply yet; s.closed until Close, then nil; the wait before reconnecting.
	inFlight []*Pending
	closing  chan struct{}
	delay    time.Duration
}

// Pending is a message on its way.
type Pending struct {
	req  *messagingv1.SendRequest
	done chan struct{}
	resp *messagingv1.SendResponse
	err  error
}

// Wait returns the message's reply once it is durable, or why it was refused.
func (p *Pending) Wait(ctx context.Context) (*messagingv1.SendResponse, error) {
	select {
	case <-p.done:
		return p.resp, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// NewSender starts a Sender that keeps up to window messages in flight (1 to
// MaxSenderWindow; 0 means MaxSenderWindow). It runs until ctx ends or Close.
func (c *Client) NewSender(ctx context.Context, window int) (*Sender, error) {
	if window == 0 {
		window = MaxSenderWindow
	}
	if window < 1 || window > MaxSenderWindow {
		return nil, fmt.Errorf("sdk: sender window %d: want 1 to %d", window, MaxSenderWindow)
	}
	s := &Sender{
		c:      c,
		slots:  make(chan struct{}, window),
		queue:  make(chan *Pending),
		closed: make(chan struct{}),
		done:   make(chan struct{}),
	}
	s.closing = s.closed
	go func() {
		s.err = s.run(ctx)
		close(s.done)
	}()
	return s, nil
}

// Send queues req, waiting while the window is full, and returns at once after that.
// req must not be modified afterwards: it may be sent again after a reconnection.
func (s *Sender) Send(ctx context.Context, req *messagingv1.SendRequest) (*Pending, error) {
	select {
	case s.slots <- struct{}{}:
	case <-s.closed:
		return nil, ErrSenderClosed
	case <-s.done:
		return nil, s.stopped()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p := &Pending{req: req, done: make(chan struct{})}
	select {
	case s.queue <- p:
		return p, nil
	case <-s.closed:
	case <-s.done:
	case <-ctx.Done():
		<-s.slots
		return nil, ctx.Err()
	}
	<-s.slots
	return nil, s.stopped()
}

// Close stops taking messages, waits until every message sent has its reply (or ctx
// ends), and closes the stream. It returns why the Sender stopped early, if it did.
func (s *Sender) Close(ctx context.Context) error {
	s.once.Do(func() { close(s.closed) })
	select {
	case <-s.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if errors.Is(s.err, ErrSenderClosed) {
		return nil
	}
	return s.err
}

func (s *Sender) stopped() error {
	select {
	case <-s.done:
		if s.err != nil {
			return s.err
		}
	default:
	}
	return ErrSenderClosed
}

// run keeps a stream open and moves messages through it until ctx ends, or Close and
// the last reply. It fails the messages still in flight with its error.
func (s *Sender) run(ctx context.Context) error {
	fail := func(err error) error {
		for _, p := range s.inFlight {
			s.finish(p, nil, err)
		}
		return err
	}
	client := messagingv1.NewMessagingServiceClient(s.c.conn)
	s.delay = 100 * time.Millisecond
	for {
		err := s.stream(ctx, client)
		if err == nil { // closed, and every reply in
			return ErrSenderClosed
		}
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		retry, newToken := retrySend(err)
		if !retry {
			return fail(fmt.Errorf("sdk: send stream: %w", err))
		}
		if newToken {
			s.c.tok.invalidate()
		}
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(s.delay):
		}
		s.delay = min(2*s.delay, 5*time.Second)
	}
}

// finish gives p its outcome and frees its place in the window.
func (s *Sender) finish(p *Pending, resp *messagingv1.SendResponse, err error) {
	p.resp, p.err = resp, err
	close(p.done)
	<-s.slots
}

// stream runs one SendStream: it resends inFlight, then sends what Send queues and
// matches replies to inFlight in order. It returns nil once Close was called and every
// reply is in, or the error that ended the stream.
func (s *Sender) stream(ctx context.Context, client messagingv1.MessagingServiceClient) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.SendStream(ctx)
	if err != nil {
		return err
	}
	// A Send that fails (io.EOF) means the stream ended: Recv says why. Until then the
	// replies that came are taken, and nothing more is sent on it (queue nil).
	queue := s.queue
	for _, p := range s.inFlight {
		if err := stream.Send(&messagingv1.SendStreamRequest{Send: p.req}); err != nil {
			queue = nil
			break
		}
	}
	replies := make(chan *messagingv1.SendStreamResponse)
	ended := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				ended <- err
				return
			}
			select {
			case replies <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		if s.closing == nil && len(s.inFlight) == 0 {
			return stream.CloseSend()
		}
		select {
		case p := <-queue:
			s.inFlight = append(s.inFlight, p)
			if err := stream.Send(&messagingv1.SendStreamRequest{Send: p.req}); err != nil {
				queue = nil // p is resent on the next stream
			}
		case <-s.closing:
			s.closing, queue = nil, nil // from here on the stream only waits for replies
		case r := <-replies:
			if len(s.inFlight) == 0 || r.GetClientMessageId() != s.inFlight[0].req.GetClientMessageId() {
				return status.Errorf(codes.Internal, "sdk: send stream: a reply for %q out of order", r.GetClientMessageId())
			}
			p := s.inFlight[0]
			s.inFlight[0] = nil
			s.inFlight = s.inFlight[1:]
			if e := r.GetError(); e != nil {
				s.finish(p, nil, status.ErrorProto(&spb.Status{Code: e.GetCode(), Message: e.GetMessage(), Details: e.GetDetails()}))
			} else {
				s.finish(p, r.GetSent(), nil)
			}
			s.delay = 100 * time.Millisecond
		case err := <-ended:
			if errors.Is(err, io.EOF) && len(s.inFlight) > 0 {
				return status.Error(codes.Unavailable, "sdk: send stream ended with messages in flight")
			}
			return err
		}
	}
}
