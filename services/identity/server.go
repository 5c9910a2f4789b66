package identity

import (
	"encoding/base32"
	"fmt"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	identitystoragev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/identity/v1"
)

const (
	appIDPrefix  = ident.AppPrefix
	appIDLen     = 26 // 16 random bytes in base32
	keyIDLen     = 16 // 10 random bytes in base32
	apiKeyPrefix = auth.AppKeyPrefix
	secretLen    = 32
)

// b32 is unpadded lower-case base32, the alphabet of ids and identities.
var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Server implements umbra.identity.v1.IdentityService. It is also the app-key verifier,
// the key set and the revocation checker of a process that hosts the identity service.
type Server struct {
	identityv1.UnimplementedIdentityServiceServer
	store  Store
	log    *zap.Logger
	issuer string
	ttl    time.Duration
	now    func() time.Time
	rand   io.Reader

	mu     sync.RWMutex // guards signer
	signer *identitystoragev1.SigningKeyRecord
}

var (
	_ identityv1.IdentityServiceServer = (*Server)(nil)
	_ auth.AppKeyVerifier              = (*Server)(nil)
	_ auth.KeySet                      = (*Server)(nil)
	_ auth.RevocationChecker           = (*Server)(nil)
)

// New returns a Server over store, creating the first signing key if there is none.
// A nil log discards logs.
func New(store Store, cfg Config, log *zap.Logger) (*Server, error) {
	if log == nil {
		log = zap.NewNop()
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{store: store, log: log, issuer: cfg.Issuer, ttl: cfg.DefaultTTL, now: cfg.Clock, rand: cfg.Rand}
	key, err := s.newSigningKey()
	if err != nil {
		return nil, err
	}
	if _, err := store.AddSigningKey(key, time.Time{}, true); err != nil {
		return nil, fmt.Errorf("identity: first signing key: %w", err)
	}
	if err := s.loadSigner(); err != nil {
		return nil, err
	}
	return s, nil
}

// Register registers the service on g.
func (s *Server) Register(g grpc.ServiceRegistrar) { identityv1.RegisterIdentityServiceServer(g, s) }

func (s *Server) randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.rand, b); err != nil {
		return nil, fmt.Errorf("identity: randomness: %w", err)
	}
	return b, nil
}

func (s *Server) randomID(n int) (string, error) {
	b, err := s.randomBytes(n)
	if err != nil {
		return "", err
	}
	return b32.EncodeToString(b), nil
}
