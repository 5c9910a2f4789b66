package node

import (
	"context"
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/umbra-e2ee/umbra/gateway"
	"github.com/umbra-e2ee/umbra/internal/boltdb"
	"github.com/umbra-e2ee/umbra/internal/grpcserver"
	"github.com/umbra-e2ee/umbra/pkg/auth"
	adminv1 "github.com/umbra-e2ee/umbra/proto/umbra/admin/v1"
)

// services are the services a process hosts, with its token verifier.
type services struct {
	deps   *deps
	hosted []*hosted
	// feed is the identity service's revocation feed, which the token verifier
	// follows when the identity service is elsewhere; nil when it is here.
	feed *auth.RevocationFeed
	// closeIdentity closes the connection to a remote identity service.
	closeIdentity func()
	// watchers follow the readiness of stores in PostgreSQL (watchDatabase).
	watchers []func(ctx context.Context)
}

// startServices builds the service of every role over its store. Identity comes first:
// the token verifier of the process uses it when it is here, and the other services get
// the verifier's revocation checker. On an error it closes what it had built.
func startServices(cfg Config, log *zap.Logger) (*services, error) {
	d := &deps{dataDir: cfg.DataDir, log: log, cfg: cfg}
	s := &services{deps: d, closeIdentity: func() {}}
	if slices.Contains(cfg.Roles, gateway.Identity) {
		if err := s.build(gateway.Identity); err != nil {
			s.close()
			return nil, err
		}
	}
	tokens, feed, closeIdentity, err := tokenVerifier(d)
	if err != nil {
		s.close()
		return nil, err
	}
	s.closeIdentity, s.feed = closeIdentity, feed
	d.tokens = tokens
	d.revocations = d.identity
	if feed != nil {
		d.revocations = feed
	}
	for _, r := range cfg.Roles {
		if r == gateway.Identity {
			continue
		}
		if err := s.build(r); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// build starts role's service and lists its store in the data folder's manifest.
func (s *services) build(role string) error {
	// A damaged file panics or faults in bbolt while the service opens it and reads it
	// first: Protect makes that an error naming the file.
	var h *hosted
	err := boltdb.Protect(dbPath(s.deps, role), func() error {
		var err error
		h, err = builders[role](s.deps)
		return err
	})
	if err != nil {
		return fmt.Errorf("node: start %s: %w", role, err)
	}
	s.hosted = append(s.hosted, h)
	if s.deps.cfg.Store != "" {
		return nil // in PostgreSQL: no file in the data folder
	}
	return recordStore(s.deps.dataDir, role)
}

// close closes the connection to the identity service, then the services, last first.
func (s *services) close() {
	s.closeIdentity()
	for _, h := range slices.Backward(s.hosted) {
		if err := h.close(); err != nil {
			s.deps.log.Error("close store", zap.String("service", h.name), zap.Error(err))
		}
	}
}

// stores are the bbolt files of the services, by name.
func (s *services) stores() map[string]*boltdb.DB {
	m := map[string]*boltdb.DB{}
	for _, h := range s.hosted {
		if h.db != nil {
			m[h.name] = h.db
		}
	}
	return m
}

// inPostgres are the hosted services whose store is in PostgreSQL.
func (s *services) inPostgres() []string {
	var names []string
	for _, h := range s.hosted {
		if h.ready != nil {
			names = append(names, h.name)
		}
	}
	return names
}

// background are the loops to run while the process serves: the revocation feed's,
// then each service's.
func (s *services) background() []func(ctx context.Context) {
	var loops []func(ctx context.Context)
	if s.feed != nil {
		loops = append(loops, s.feed.Run)
	}
	loops = append(loops, s.watchers...)
	for _, h := range s.hosted {
		if h.run != nil {
			loops = append(loops, h.run)
		}
	}
	return loops
}

// newGRPCServer returns the gRPC server of svcs and of the admin service, with the
// process's authentication over their merged access tables, every service SERVING.
func newGRPCServer(cfg Config, svcs *services, reg prometheus.Registerer, log *zap.Logger) (*grpcserver.Server, error) {
	tables := []auth.Table{grpcserver.SystemPolicies(), adminPolicies()}
	for _, h := range svcs.hosted {
		tables = append(tables, h.policies)
	}
	table, err := auth.Merge(tables...)
	if err != nil {
		return nil, err
	}
	acfg := auth.Config{
		Policies:        table,
		Tokens:          svcs.deps.tokens,
		AdminCredential: cfg.AdminCredential,
		ServiceToken:    cfg.ServiceToken,
		ServicePeers:    cfg.ServicePeers,
		Failures:        cfg.AuthFailures,
		ForwarderToken:  cfg.ForwarderToken,
		ForwarderPeers:  cfg.ForwarderPeers,
	}
	if svcs.deps.identity != nil {
		acfg.AppKeys = svcs.deps.identity
	}
	srv, err := grpcserver.New(requestLimits(cfg.GRPC, cfg.Messaging), auth.New(acfg), log.Named("grpc"), reg)
	if err != nil {
		return nil, err
	}
	for _, h := range svcs.hosted {
		h.register(srv)
	}
	adminv1.RegisterAdminServiceServer(srv, &adminServer{stores: svcs.stores(), inPostgres: svcs.inPostgres()})
	if err := grpcserver.CheckPolicies(srv.Server, table); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	for _, h := range svcs.hosted {
		srv.Health.SetServingStatus(h.grpcName, healthpb.HealthCheckResponse_SERVING)
	}
	return srv, nil
}

// watchStores ties each service's readiness to its store's writes (watchStore), and
// hands the stores to cfg.StoresOpen.
func watchStores(cfg Config, svcs *services, srv *grpcserver.Server, reg prometheus.Registerer, log *zap.Logger) error {
	writeFailures, err := writeFailuresMetric(reg)
	if err != nil {
		return err
	}
	for _, h := range svcs.hosted {
		if h.db != nil {
			watchStore(h, srv, writeFailures, cfg.StoreProbeInterval, log.Named(h.name))
		}
		if h.ready != nil {
			svcs.watchers = append(svcs.watchers, watchDatabase(h, srv, cfg.StoreProbeInterval, log.Named(h.name)))
		}
	}
	if cfg.StoresOpen != nil {
		cfg.StoresOpen(svcs.stores())
	}
	return nil
}
