package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	cardstoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/card/v1"
)

// rawCodec passes gRPC messages through as bytes, for the tampering proxy.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// tamperingProxy forwards unary calls to backend, letting tamper rewrite each reply:
// a malicious server between the CLI and the real services. It returns its address.
func tamperingProxy(t *testing.T, backend string, tamper func(method string, reply []byte) []byte) string {
	t.Helper()
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: backend})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		in, _ := metadata.FromIncomingContext(stream.Context())
		ctx := metadata.NewOutgoingContext(stream.Context(), metadata.MD{"authorization": in.Get("authorization")})
		var req, reply []byte
		if err := stream.RecvMsg(&req); err != nil {
			return err
		}
		if err := conn.Invoke(ctx, method, &req, &reply, grpc.ForceCodec(rawCodec{})); err != nil {
			return err
		}
		reply = tamper(method, reply)
		return stream.SendMsg(&reply)
	}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// TestCLIRefusesASubstitutedCard: between alice's CLI and the services sits a server
// that, once alice has pinned bob's card, serves a card of its own for bob, counter-
// signed with the real card service key (a malicious operator's power), beside the
// proof of bob's real card. The key transparency log does not prove it: encrypt
// refuses, saying so, and encrypts nothing; once the server behaves again bob's pinned
// card works as before. (A forged card the operator also logs is a key change: the
// README's key-change story, and pkg/sdk's tests.) A CLI given a service key the
// server does not have refuses every card.
func TestCLIRefusesASubstitutedCard(t *testing.T) {
	c := startCLINode(t)
	var substitute atomic.Pointer[cardv1.Card]
	proxy := tamperingProxy(t, c.n.GRPC, func(method string, reply []byte) []byte {
		forged := substitute.Load()
		if forged == nil || !strings.HasSuffix(method, "/SearchCardsWithProofs") {
			return reply
		}
		var r cardv1.SearchCardsWithProofsResponse
		if proto.Unmarshal(reply, &r) != nil {
			return reply
		}
		for _, res := range r.GetResults() {
			if res.GetProof().GetIdentity() == forged.GetIdentity() {
				res.Card = forged
			}
		}
		out, _ := proto.Marshal(&r)
		return out
	})
	c.env = append(c.env, "UMBRA_SERVER="+proxy, "UMBRA_NO_PASSPHRASE=true", "UMBRA_API_KEY="+c.app.APIKey)
	c.ok("phone", "login", "alice")
	c.ok("phone", "keys", "init")
	c.ok("desk", "login", "bob")
	c.ok("desk", "keys", "init")
	c.ok("phone", "encrypt", "--to", "bob", "pinning bob")

	var rec cardstoragev1.ServiceKeyRecord
	if err := c.n.Stores["card"].View(func(tx *bolt.Tx) error {
		return boltdb.GetProto(tx.Bucket([]byte("service_key")), []byte("current"), &rec)
	}); err != nil {
		t.Fatal(err)
	}
	serviceKey := ed25519.NewKeyFromSeed(rec.GetSeed())
	kp, err := e2ee.GenerateKeyPair(e2ee.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	bob := c.app.User(t, "bob")
	content, sig, err := e2ee.NewCard(kp, bob, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	id := e2ee.CardID(content)
	substitute.Store(&cardv1.Card{
		CardId: id, Identity: bob, Content: content, SelfSignature: sig,
		ServiceSignature: e2ee.ServiceSign(serviceKey, id), ServiceKeyId: rec.GetKeyId(),
		Status: cardv1.CardStatus_CARD_STATUS_ACTIVE, PublishedAt: timestamppb.Now(),
	})
	r := c.on("phone", "", nil, "encrypt", "--to", "bob", "for bob's eyes only")
	if r.exit != 1 || r.stdout != "" {
		t.Fatalf("encrypt to a substituted card exited %d, printed %q; want a refusal and no envelope", r.exit, r.stdout)
	}
	wantIn(t, "the refusal", r.stderr, "card not proved by the key transparency log", "is not the one the map names", fingerprintHex(id), "nothing was encrypted")
	if r := c.on("phone", "", nil, "trust", "show", "bob"); r.exit != 1 || !strings.Contains(r.stderr, "not proved by the key transparency log") {
		t.Errorf("trust show while the card is substituted: exit %d, %q; want the same refusal", r.exit, r.stderr)
	}

	substitute.Store(nil)
	c.ok("phone", "encrypt", "--to", "bob", "the real bob again")
	if out := c.ok("phone", "trust", "show", "bob"); strings.Contains(out, "KEY CHANGE") {
		t.Errorf("a card the log does not prove was recorded as a key change:\n%s", out)
	}

	// A CLI that ships a service key this server does not have refuses its cards.
	rogue := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	c.ok("laptop", "login", "carol")
	r = c.run("", []string{c.home("laptop"), "UMBRA_SERVICE_KEY=rogue:" + base64.StdEncoding.EncodeToString(rogue)}, "keys", "init")
	if r.exit != 1 || !strings.Contains(r.stderr, "unknown card service key") {
		t.Errorf("keys init with a service key the server lacks: exit %d, %q; want the unknown service key refused", r.exit, r.stderr)
	}
}

// fingerprintHex is sdk.Fingerprint, written out: 12 bytes in groups of 4 hex digits.
func fingerprintHex(id []byte) string {
	var parts []string
	for i := 0; i < 12; i += 2 {
		parts = append(parts, strings.ToLower(strings.TrimSpace(hexByte(id[i])+hexByte(id[i+1]))))
	}
	return strings.Join(parts, " ")
}

func hexByte(b byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[b>>4], digits[b&15]})
}
