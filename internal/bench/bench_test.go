package bench_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/umbra-e2ee/umbra/internal/bench"
	"github.com/umbra-e2ee/umbra/internal/node"
	"github.com/umbra-e2ee/umbra/internal/node/nodetest"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
)

func TestMessagingRunMeasuresSendsAndDeliveries(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Messaging.SendRate, c.Messaging.SendBurst = 1e6, 1e6 })
	app := n.NewApp(t)
	res, err := bench.Messaging(context.Background(), bench.MessagingConfig{
		Server: grpcclient.Config{Addr: n.GRPC}, APIKey: app.APIKey,
		Senders: 4, Subscribers: 2, Size: 64, Duration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent == 0 || res.Delivered == 0 || res.Delivered > res.Sent {
		t.Fatalf("sent %d, delivered %d: want both, deliveries only for the 2 subscribed recipients of 4", res.Sent, res.Delivered)
	}
	if !slices.IsSorted(res.Latencies) || res.Percentile(99) <= 0 || res.Percentile(50) > res.Percentile(99) {
		t.Errorf("latencies p50 %s p99 %s", res.Percentile(50), res.Percentile(99))
	}
	if len(res.Refused) != 0 {
		t.Errorf("refused %v with the rate limit raised", res.Refused)
	}
}

func TestMessagingRunReportsRateLimiting(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.Messaging.SendRate, c.Messaging.SendBurst = 5, 5 })
	app := n.NewApp(t)
	res, err := bench.Messaging(context.Background(), bench.MessagingConfig{
		Server: grpcclient.Config{Addr: n.GRPC}, APIKey: app.APIKey,
		Senders: 2, Size: 64, Duration: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Refused[codes.ResourceExhausted] == 0 {
		t.Errorf("no refusal counted with a limit of 5 messages per second: %+v", res)
	}
}

func TestRawDrain(t *testing.T) {
	res, err := bench.RawDrain(context.Background(), bench.RawConfig{Dir: t.TempDir(), Writers: 8, ValueSize: 1024, Writes: 400})
	if err != nil {
		t.Fatal(err)
	}
	if res.Writes != 400 || res.Rate() <= 0 {
		t.Errorf("raw run = %+v", res)
	}
	if _, err := bench.RawDrain(context.Background(), bench.RawConfig{Dir: t.TempDir(), Writers: 0, ValueSize: 1024, Writes: 1}); err == nil {
		t.Error("a run without writers was accepted")
	}
}
