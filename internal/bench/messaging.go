package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// MessagingConfig describes a messaging run.
type MessagingConfig struct {
	// Server is how to reach Umbra's gRPC listener; APIKey is an app's API key, used to
	// create the run's identities and their tokens.
	Server grpcclient.Config
	APIKey string
	// Senders send concurrently, each to its own recipient, each waiting for the
	// durable acknowledgement of a message before the next.
	Senders int
	// Subscribers are how many of those recipients keep a Subscribe stream open and
	// measure send-to-deliver latency (at most Senders).
	Subscribers int
	// Size is the envelope size in bytes (at least 16).
	Size int
	// Duration is how long to send; Warmup is sent first and not measured.
	Duration time.Duration
	Warmup   time.Duration
	// Rate, when set, paces the senders to this many messages per second in all;
	// zero sends as fast as acknowledgements come back.
	Rate float64
	// Connections spreads the senders over this many gRPC connections (0: one per 8).
	Connections int
	// Stream sends over one SendStream per sender instead of a Send call per message;
	// each sender still waits for a message's durable reply before the next.
	Stream bool
	// Profile, when set, receives the CPU profile of the measured part of the run.
	Profile io.Writer
	// Replicas are more messaging replicas beside Server, over the same storage: the
	// connections go to Server and to each replica in turn, and each recipient
	// subscribes on another replica than its sender sends to, so that every delivery
	// crosses replicas. The run's identities and cards are made through Server.
	Replicas []grpcclient.Config
	// Identity and Card, when set, are where the run's identities and cards are made
	// instead of Server (a deployment of one process per service).
	Identity, Card *grpcclient.Config
	// OnMeasure, when set, is called when the measured part of the run starts and
	// when it ends (start false), for measurements of the caller's own.
	OnMeasure func(start bool)
}

// MessagingResult is what a messaging run measured.
type MessagingResult struct {
	Sent      int
	Delivered int
	Elapsed   time.Duration
	// Refused counts sends the server refused (rate limits...), by code.
	Refused map[codes.Code]int
	// Latencies are the send-to-deliver times of the delivered messages, sorted.
	Latencies []time.Duration
}

// SentRate and DeliveredRate are messages per second.
func (r *MessagingResult) SentRate() float64      { return float64(r.Sent) / r.Elapsed.Seconds() }
func (r *MessagingResult) DeliveredRate() float64 { return float64(r.Delivered) / r.Elapsed.Seconds() }

// Percentile returns the p-th percentile latency (p in 0..100).
func (r *MessagingResult) Percentile(p float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(r.Latencies)-1))
	return r.Latencies[i]
}

// Messaging runs N senders and M subscribers against a running server. Each message's
// envelope starts with its send time, so subscribers measure send-to-deliver latency
// with the same clock.
func Messaging(ctx context.Context, cfg MessagingConfig) (*MessagingResult, error) {
	if cfg.Senders <= 0 || cfg.Subscribers < 0 || cfg.Subscribers > cfg.Senders || cfg.Size < 16 || cfg.Duration <= 0 {
		return nil, errors.New("bench: need senders ≥ 1, 0 ≤ subscribers ≤ senders, size ≥ 16 and a duration")
	}
	if cfg.Connections <= 0 {
		cfg.Connections = (cfg.Senders + 7) / 8
	}
	servers := append([]grpcclient.Config{cfg.Server}, cfg.Replicas...)
	if r := cfg.Connections % len(servers); r != 0 {
		cfg.Connections += len(servers) - r // as many on each replica
	}
	conns := make([]*grpc.ClientConn, cfg.Connections)
	for i := range conns {
		c, err := grpcclient.Dial(servers[i%len(servers)])
		if err != nil {
			return nil, err
		}
		defer c.Close()
		conns[i] = c
	}
	idConn, cardConn := conns[0], conns[0]
	for _, c := range []struct {
		cfg  *grpcclient.Config
		conn **grpc.ClientConn
	}{{cfg.Identity, &idConn}, {cfg.Card, &cardConn}} {
		if c.cfg != nil {
			conn, err := grpcclient.Dial(*c.cfg)
			if err != nil {
				return nil, err
			}
			defer conn.Close()
			*c.conn = conn
		}
	}
	senders, recipients, err := identities(ctx, idConn, cardConn, cfg.APIKey, cfg.Senders)
	if err != nil {
		return nil, err
	}

	res := &MessagingResult{Refused: map[codes.Code]int{}}
	var (
		measuring atomic.Bool
		mu        sync.Mutex
		subsReady sync.WaitGroup
	)
	subCtx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	var subs sync.WaitGroup
	subErr := make(chan error, cfg.Subscribers)
	for i := range cfg.Subscribers {
		subsReady.Add(1)
		subs.Go(func() {
			conn := conns[i%len(conns)] // the sender's
			if len(servers) > 1 {
				conn = conns[(i+1)%len(conns)] // the next replica's
			}
			err := subscribe(subCtx, conn, recipients[i], &subsReady, func(sentAt time.Time) {
				if !measuring.Load() {
					return
				}
				lat := time.Since(sentAt)
				mu.Lock()
				res.Delivered++
				res.Latencies = append(res.Latencies, lat)
				mu.Unlock()
			})
			if err != nil && subCtx.Err() == nil {
				subErr <- err
			}
		})
	}
	subsReady.Wait()

	sendCtx, stopSending := context.WithCancel(ctx)
	var sendersWG sync.WaitGroup
	var firstErr atomic.Pointer[error]
	interval := time.Duration(0)
	if cfg.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(cfg.Senders) / cfg.Rate)
	}
	for i := range cfg.Senders {
		sendersWG.Go(func() {
			send := send
			if cfg.Stream {
				send = sendStream
			}
			err := send(sendCtx, conns[i%len(conns)], senders[i], recipients[i], cfg.Size, interval, func(code codes.Code) {
				mu.Lock()
				defer mu.Unlock()
				if code != codes.OK {
					res.Refused[code]++
				} else if measuring.Load() {
					res.Sent++
				}
			})
			if err != nil && sendCtx.Err() == nil {
				firstErr.CompareAndSwap(nil, &err)
				stopSending()
			}
		})
	}
	select {
	case <-time.After(cfg.Warmup):
	case <-ctx.Done():
	}
	if cfg.OnMeasure != nil {
		cfg.OnMeasure(true)
	}
	start := time.Now()
	measuring.Store(true)
	if cfg.Profile != nil {
		if err := pprof.StartCPUProfile(cfg.Profile); err != nil {
			stopSending()
			return nil, fmt.Errorf("bench: cpu profile: %w", err)
		}
	}
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
	}
	if cfg.Profile != nil {
		pprof.StopCPUProfile()
	}
	measuring.Store(false)
	res.Elapsed = time.Since(start)
	if cfg.OnMeasure != nil {
		cfg.OnMeasure(false)
	}
	stopSending()
	sendersWG.Wait()
	// Let messages in flight reach the subscribers before stopping them.
	time.Sleep(200 * time.Millisecond)
	stopSubs()
	subs.Wait()
	close(subErr)
	if p := firstErr.Load(); p != nil {
		return res, *p
	}
	for err := range subErr {
		return res, err
	}
	slices.Sort(res.Latencies)
	return res, ctx.Err()
}

// user is one identity of the run with its token and, for a sender, its card.
type user struct {
	identity string
	token    string
	card     []byte
}

// identities creates the run's sender and recipient identities and their tokens, and
// publishes a card for each sender: the server stores an ENCRYPTED message only when
// its header names a card of its sender.
func identities(ctx context.Context, conn, cardConn *grpc.ClientConn, apiKey string, n int) ([]user, []user, error) {
	if apiKey == "" {
		return nil, nil, errors.New("bench: an app API key is needed (UMBRA_API_KEY; umbra dev prints it)")
	}
	client := identityv1.NewIdentityServiceClient(conn)
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKey)
	run := make([]byte, 6)
	rand.Read(run)
	uids := make([]string, 0, 2*n)
	for i := range n {
		uids = append(uids, fmt.Sprintf("bench-%x-sender-%d", run, i), fmt.Sprintf("bench-%x-recipient-%d", run, i))
	}
	resp, err := client.ResolveIdentities(actx, &identityv1.ResolveIdentitiesRequest{Uids: uids})
	if err != nil {
		return nil, nil, fmt.Errorf("bench: resolve identities: %w", err)
	}
	token := func(uid string) (user, error) {
		id := resp.GetUsers()[uid]
		t, err := client.IssueToken(actx, &identityv1.IssueTokenRequest{Identity: id, Ttl: durationpb.New(time.Hour)})
		if err != nil {
			return user{}, fmt.Errorf("bench: issue token: %w", err)
		}
		return user{identity: id, token: t.GetAccessToken()}, nil
	}
	cards := cardv1.NewCardServiceClient(cardConn)
	var senders, recipients []user
	for i := range n {
		s, err := token(uids[2*i])
		if err != nil {
			return nil, nil, err
		}
		if s.card, err = publishCard(ctx, cards, s); err != nil {
			return nil, nil, err
		}
		r, err := token(uids[2*i+1])
		if err != nil {
			return nil, nil, err
		}
		senders, recipients = append(senders, s), append(recipients, r)
	}
	return senders, recipients, nil
}

// publishCard publishes a card of the compact suite for u and returns its id. The run
// never decrypts: envelopes are random bytes the server stores without opening.
func publishCard(ctx context.Context, cards cardv1.CardServiceClient, u user) ([]byte, error) {
	kp, err := e2ee.GenerateKeyPair(e2ee.SuiteX25519)
	if err != nil {
		return nil, err
	}
	content, sig, err := e2ee.NewCard(kp, u.identity, time.Now(), nil)
	if err != nil {
		return nil, err
	}
	var resp *cardv1.PublishCardResponse
	for deadline := time.Now().Add(15 * time.Second); ; {
		// A card service that has just started answers UNAVAILABLE until it has read
		// the revocation feed once.
		resp, err = cards.PublishCard(withToken(ctx, u), &cardv1.PublishCardRequest{Content: content, SelfSignature: sig}, grpc.WaitForReady(true))
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bench: publish a card: %w", err)
	}
	return resp.GetCard().GetCardId(), nil
}

func withToken(ctx context.Context, u user) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+u.token)
}

// send sends from one sender to one recipient until ctx ends; report gets each
// outcome. interval paces the sends when set.
func send(ctx context.Context, conn *grpc.ClientConn, from, to user, size int, interval time.Duration, report func(codes.Code)) error {
	client := messagingv1.NewMessagingServiceClient(conn)
	ctx = withToken(ctx, from)
	return sendLoop(ctx, from, to, size, interval, report, func(req *messagingv1.SendRequest) error {
		_, err := client.Send(ctx, req)
		return err
	})
}

// sendLoop sends from one sender to one recipient with send until ctx ends; report gets
// each outcome. interval paces the sends when set.
func sendLoop(ctx context.Context, from, to user, size int, interval time.Duration, report func(codes.Code), send func(*messagingv1.SendRequest) error) error {
	env := make([]byte, size)
	rand.Read(env)
	next := time.Now()
	for i := 0; ; i++ {
		if interval > 0 {
			next = next.Add(interval)
			if d := time.Until(next); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return nil
				}
			}
		}
		binary.BigEndian.PutUint64(env, uint64(time.Now().UnixNano()))
		err := send(&messagingv1.SendRequest{
			ConversationId:  to.identity,
			ClientMessageId: from.identity[2:12] + "-" + strconv.Itoa(i),
			Header:          &messagingv1.MessageHeader{Kind: messagingv1.MessageKind_MESSAGE_KIND_ENCRYPTED, SenderCardId: from.card},
			Envelope:        env,
		})
		if ctx.Err() != nil {
			return nil
		}
		switch code := status.Code(err); code {
		case codes.OK, codes.ResourceExhausted:
			report(code)
		default:
			return fmt.Errorf("bench: send: %w", err)
		}
	}
}

// sendStream is send over one SendStream.
func sendStream(ctx context.Context, conn *grpc.ClientConn, from, to user, size int, interval time.Duration, report func(codes.Code)) error {
	stream, err := messagingv1.NewMessagingServiceClient(conn).SendStream(withToken(ctx, from))
	if err != nil {
		return fmt.Errorf("bench: send stream: %w", err)
	}
	return sendLoop(ctx, from, to, size, interval, report, func(req *messagingv1.SendRequest) error {
		if err := stream.Send(&messagingv1.SendStreamRequest{Send: req}); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if e := resp.GetError(); e != nil {
			return status.Error(codes.Code(e.GetCode()), e.GetMessage())
		}
		return nil
	})
}

// subscribe reads one recipient's stream, calling got with the send time of each
// message; ready is released at the first heartbeat (the stream is live).
func subscribe(ctx context.Context, conn *grpc.ClientConn, u user, ready *sync.WaitGroup, got func(time.Time)) error {
	readyOnce := sync.OnceFunc(ready.Done)
	defer readyOnce()
	stream, err := messagingv1.NewMessagingServiceClient(conn).Subscribe(withToken(ctx, u), &messagingv1.SubscribeRequest{HeartbeatInterval: durationpb.New(time.Second)})
	if err != nil {
		return fmt.Errorf("bench: subscribe: %w", err)
	}
	for {
		item, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("bench: subscribe: %w", err)
		}
		switch it := item.GetItem().(type) {
		case *messagingv1.SubscribeResponse_Heartbeat:
			readyOnce()
		case *messagingv1.SubscribeResponse_Message:
			if it.Message.GetSender() != u.identity && len(it.Message.GetEnvelope()) >= 8 {
				got(time.Unix(0, int64(binary.BigEndian.Uint64(it.Message.GetEnvelope()))))
			}
		}
	}
}
