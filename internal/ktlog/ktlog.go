// Package ktlog reaches a card service's key transparency log through its public RPCs
// (GetLogKey, GetCheckpoint, GetConsistencyProof, GetLogEntries), over gRPC or through
// the REST gateway: what a witness (internal/witness) and an auditor (internal/ktaudit)
// read. Nothing it returns is trusted: its callers verify every checkpoint and proof
// with pkg/kt.
package ktlog

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// MaxEntriesPage is the most entries one GetLogEntries call returns.
const MaxEntriesPage = 1000

// Log is a key transparency log's public API.
type Log interface {
	// LogKey is the log's origin and verifier key, as the log states them.
	LogKey(ctx context.Context) (origin, verifierKey string, err error)
	// Checkpoint is the latest signed checkpoint.
	Checkpoint(ctx context.Context) ([]byte, error)
	// Consistency is the proof that the log of from entries is a prefix of the log of
	// to entries (1 <= from <= to).
	Consistency(ctx context.Context, from, to uint64) ([][]byte, error)
	// Entries are up to count (at most MaxEntriesPage) entries from start, each its
	// exact LogLeaf bytes; fewer at the end of the log.
	Entries(ctx context.Context, start uint64, count int) ([][]byte, error)
	Close() error
}

// Config says where the log is.
type Config struct {
	// Addr is the card service's gRPC address ("host:port"), or its REST gateway's
	// base URL ("http://host:8080", "https://kt.example.com").
	Addr string
	// TLS for either; plaintext beyond loopback is refused unless Insecure.
	TLS      tlsconf.Client
	Insecure bool
	// Timeout bounds each call; zero means DefaultTimeout.
	Timeout time.Duration
}

// DefaultTimeout bounds each call to the log.
const DefaultTimeout = 30 * time.Second

// Dial returns the log at cfg.Addr. It does not wait for the server.
func Dial(cfg Config) (Log, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if strings.HasPrefix(cfg.Addr, "http://") || strings.HasPrefix(cfg.Addr, "https://") {
		return dialHTTP(cfg)
	}
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: cfg.Addr, TLS: cfg.TLS, Insecure: cfg.Insecure})
	if err != nil {
		return nil, err
	}
	return &grpcLog{cards: cardv1.NewCardServiceClient(conn), conn: conn, timeout: cfg.Timeout}, nil
}

// Over returns the log of a card service client (one the caller dialled, or a test's).
// Close does nothing.
func Over(cards cardv1.CardServiceClient) Log {
	return &grpcLog{cards: cards, timeout: DefaultTimeout}
}

type grpcLog struct {
	cards   cardv1.CardServiceClient
	conn    *grpc.ClientConn
	timeout time.Duration
}

func (g *grpcLog) LogKey(ctx context.Context) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	r, err := g.cards.GetLogKey(ctx, &cardv1.GetLogKeyRequest{})
	if err != nil {
		return "", "", fmt.Errorf("GetLogKey: %w", err)
	}
	return r.GetOrigin(), r.GetVerifierKey(), nil
}

func (g *grpcLog) Checkpoint(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	r, err := g.cards.GetCheckpoint(ctx, &cardv1.GetCheckpointRequest{})
	if err != nil {
		return nil, fmt.Errorf("GetCheckpoint: %w", err)
	}
	return r.GetCheckpoint(), nil
}

func (g *grpcLog) Consistency(ctx context.Context, from, to uint64) ([][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	r, err := g.cards.GetConsistencyProof(ctx, &cardv1.GetConsistencyProofRequest{FromSize: from, ToSize: to})
	if err != nil {
		return nil, fmt.Errorf("GetConsistencyProof from %d to %d: %w", from, to, err)
	}
	return r.GetProof(), nil
}

func (g *grpcLog) Entries(ctx context.Context, start uint64, count int) ([][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	r, err := g.cards.GetLogEntries(ctx, &cardv1.GetLogEntriesRequest{Start: start, Count: uint32(min(count, MaxEntriesPage))})
	if err != nil {
		return nil, fmt.Errorf("GetLogEntries from %d: %w", start, err)
	}
	return r.GetEntries(), nil
}

func (g *grpcLog) Close() error {
	if g.conn == nil {
		return nil
	}
	return g.conn.Close()
}

// httpLog reads the log through the REST gateway (proto/gateway.yaml's /v1/kt/...).
type httpLog struct {
	base   string
	client *http.Client
}

// maxHTTPBody bounds an answer: a page of entries is about 200 KB of JSON.
const maxHTTPBody = 4 << 20

func dialHTTP(cfg Config) (Log, error) {
	u, err := url.Parse(cfg.Addr)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("ktlog: %q is not a gateway URL", cfg.Addr)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if u.Scheme == "https" || cfg.TLS.Enabled() {
		tc, err := cfg.TLS.Config()
		if err != nil {
			return nil, err
		}
		transport.TLSClientConfig = tc
	}
	if u.Scheme == "http" {
		if err := tlsconf.CheckPlaintext("connection to the log", u.Host, cfg.Insecure); err != nil {
			return nil, err
		}
	}
	return &httpLog{base: strings.TrimSuffix(cfg.Addr, "/"), client: &http.Client{Transport: transport, Timeout: cfg.Timeout}}, nil
}

func (h *httpLog) get(ctx context.Context, path string, query url.Values, out proto.Message) error {
	u := h.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHTTPBody+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	if len(body) > maxHTTPBody {
		return fmt.Errorf("GET %s: an answer over %d bytes", path, maxHTTPBody)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &e)
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, e.Message)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

func (h *httpLog) LogKey(ctx context.Context) (string, string, error) {
	r := &cardv1.GetLogKeyResponse{}
	if err := h.get(ctx, "/v1/kt/log-key", nil, r); err != nil {
		return "", "", err
	}
	return r.GetOrigin(), r.GetVerifierKey(), nil
}

func (h *httpLog) Checkpoint(ctx context.Context) ([]byte, error) {
	r := &cardv1.GetCheckpointResponse{}
	if err := h.get(ctx, "/v1/kt/checkpoint", nil, r); err != nil {
		return nil, err
	}
	return r.GetCheckpoint(), nil
}

func (h *httpLog) Consistency(ctx context.Context, from, to uint64) ([][]byte, error) {
	r := &cardv1.GetConsistencyProofResponse{}
	q := url.Values{"from_size": {fmt.Sprint(from)}, "to_size": {fmt.Sprint(to)}}
	if err := h.get(ctx, "/v1/kt/consistency", q, r); err != nil {
		return nil, err
	}
	return r.GetProof(), nil
}

func (h *httpLog) Entries(ctx context.Context, start uint64, count int) ([][]byte, error) {
	r := &cardv1.GetLogEntriesResponse{}
	q := url.Values{"start": {fmt.Sprint(start)}, "count": {fmt.Sprint(min(count, MaxEntriesPage))}}
	if err := h.get(ctx, "/v1/kt/entries", q, r); err != nil {
		return nil, err
	}
	return r.GetEntries(), nil
}

func (h *httpLog) Close() error {
	h.client.CloseIdleConnections()
	return nil
}
