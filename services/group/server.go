package group

import (
	"cmp"
	"context"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	"github.com/umbra-e2ee/umbra/pkg/ratelimit"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	storagev1 "github.com/umbra-e2ee/umbra/proto/umbra/storage/group/v1"
)

// Server implements umbra.group.v1.GroupService.
type Server struct {
	groupv1.UnimplementedGroupServiceServer
	store  Store
	cards  Cards
	events Events
	cfg    Config
	now    func() time.Time
	rand   io.Reader
	log    *zap.Logger
	// calls limits each identity's calls.
	calls *ratelimit.Limiter
	// wake tells the outbox loop that events were written.
	wake chan struct{}
}

var _ groupv1.GroupServiceServer = (*Server)(nil)

// New returns a Server over store that reaches the card service through cards and
// delivers events through events. Without cards (nil: no card service configured)
// commits and shares are refused as UNAVAILABLE and card changes are not followed;
// without events, events wait in the outbox. A nil log discards logs.
func New(store Store, cards Cards, events Events, cfg Config, log *zap.Logger) (*Server, error) {
	if store == nil {
		return nil, errors.New("group: no store")
	}
	if log == nil {
		log = zap.NewNop()
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	calls, err := ratelimit.New(ratelimit.Config{Rate: cfg.CallRate, Burst: cfg.CallBurst, Clock: cfg.Clock})
	if err != nil {
		return nil, fmt.Errorf("group: call rate limit: %w", err)
	}
	return &Server{store: store, cards: cards, events: events, cfg: cfg, now: cfg.Clock, rand: cfg.Rand, log: log, calls: calls, wake: make(chan struct{}, 1)}, nil
}

// Register registers the service on g.
func (s *Server) Register(g grpc.ServiceRegistrar) { groupv1.RegisterGroupServiceServer(g, s) }

// caller returns the user calling, once the per-identity limit lets the call through.
// It counts before any other check, so that refused and malformed calls count too.
func (s *Server) caller(ctx context.Context) (*auth.Principal, error) {
	p, err := auth.User(ctx)
	if err != nil {
		return nil, err
	}
	if ok, retry := s.calls.Allow(p.AppID + "/" + p.Identity); !ok {
		return nil, errs.Exhaustedf("group call rate limit exceeded: at most %s per identity, all group calls together; retry in %s", s.calls, retry.Round(time.Millisecond))
	}
	return p, nil
}

// groupCaller returns the caller of a request that names a group, after checking the
// group id.
func (s *Server) groupCaller(ctx context.Context, groupID string) (*auth.Principal, error) {
	p, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := validGroupID(groupID); err != nil {
		return nil, err
	}
	return p, nil
}

// validTarget checks the other identity a request names (field, target): its shape,
// and, when ifSelf is not empty, that it is not the caller (ifSelf is then the message
// of the INVALID_ARGUMENT). Admin calls check it only once the caller's role allows the
// call, so that a member without the right learns nothing from the answer, whatever the
// arguments (docs/groups.md, "Permission before arguments").
func validTarget(p *auth.Principal, field, target, ifSelf string) error {
	if err := ident.ValidUser(field, target); err != nil {
		return err
	}
	if ifSelf != "" && target == p.Identity {
		return errs.Invalidf("%s", ifSelf)
	}
	return nil
}

// update runs fn in a transaction and wakes the outbox loop if it wrote events.
func (s *Server) update(fn func(Tx) error) error { return s.write(s.store.Update, fn) }

// write runs fn in a transaction of run (the store's Update or Batch) and wakes the
// outbox loop if it wrote events.
func (s *Server) write(run func(func(Tx) error) error, fn func(Tx) error) error {
	var wrote bool
	err := run(func(tx Tx) error {
		err := fn(tx)
		wrote = tx.WroteEvents()
		return err
	})
	if err == nil && wrote {
		s.notify()
	}
	return err
}

func (s *Server) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// b32 is unpadded lower-case base32, the alphabet of Umbra's ids.
var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

const uploadIDLen = 26 // 16 random bytes

// randomID returns 16 random bytes as 26 base32 characters.
func (s *Server) randomID() (string, error) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(s.rand, b); err != nil {
		return "", fmt.Errorf("group: randomness: %w", err)
	}
	return b32.EncodeToString(b), nil
}

func tsTime(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

func role(m *storagev1.GroupMemberRecord) groupv1.GroupRole {
	if m == nil {
		return groupv1.GroupRole_GROUP_ROLE_UNSPECIFIED
	}
	return groupv1.GroupRole(m.GetRole())
}

func isManager(m *storagev1.GroupMemberRecord) bool {
	r := role(m)
	return r == groupv1.GroupRole_GROUP_ROLE_OWNER || r == groupv1.GroupRole_GROUP_ROLE_ADMIN
}

func mode(g *storagev1.GroupRecord) groupv1.EncryptionMode {
	return groupv1.EncryptionMode(g.GetEncryptionMode())
}

func encryptionOff(g *storagev1.GroupRecord) bool {
	return mode(g) == groupv1.EncryptionMode_ENCRYPTION_MODE_OFF
}

// rotationState is whether a group must rotate and why, the rotation period included
// even before the sweeper has marked it.
func rotationState(g *storagev1.GroupRecord, now time.Time) (bool, []groupv1.RotationReason) {
	var reasons []groupv1.RotationReason
	for _, r := range g.GetRotationReasons() {
		reasons = append(reasons, groupv1.RotationReason(r))
	}
	required := g.GetRotationRequired()
	if periodElapsed(g, now) && !slices.Contains(reasons, groupv1.RotationReason_ROTATION_REASON_PERIOD_ELAPSED) {
		required = true
		reasons = append(reasons, groupv1.RotationReason_ROTATION_REASON_PERIOD_ELAPSED)
	}
	return required, reasons
}

// rotationRequired is rotationState's first result, without building the reasons, for
// the internal methods that answer every message.
func rotationRequired(g *storagev1.GroupRecord, now time.Time) bool {
	return g.GetRotationRequired() ||
		periodElapsed(g, now) && !slices.Contains(g.GetRotationReasons(), uint32(groupv1.RotationReason_ROTATION_REASON_PERIOD_ELAPSED))
}

func periodElapsed(g *storagev1.GroupRecord, now time.Time) bool {
	at := dueAt(g)
	return !at.IsZero() && !now.Before(at)
}

// dueAt is when the group's rotation period elapses; zero if it never does.
func dueAt(g *storagev1.GroupRecord) time.Time {
	p := g.GetRotationPeriod().AsDuration()
	if p <= 0 || encryptionOff(g) || g.GetEpoch() == 0 {
		return time.Time{}
	}
	return tsTime(g.GetEpochStartedAt()).Add(p)
}

// reschedule moves the group's rotation_due entry to its current due time.
func reschedule(tx Tx, g *storagev1.GroupRecord) error {
	old := tsTime(g.GetRotationDueAt())
	at := dueAt(g)
	if old.Equal(at) {
		return nil
	}
	if err := tx.SetRotationDue(g.GetAppId(), g.GetGroupId(), old, at); err != nil {
		return err
	}
	g.RotationDueAt = nil
	if !at.IsZero() {
		g.RotationDueAt = timestamppb.New(at)
	}
	return nil
}

// markRotation marks the group rotation required for reason and reports whether the
// reason is new. A group in mode OFF is never marked: switching encryption on marks it.
func markRotation(g *storagev1.GroupRecord, reason groupv1.RotationReason) bool {
	if encryptionOff(g) {
		return false
	}
	g.RotationRequired = true
	if slices.Contains(g.GetRotationReasons(), uint32(reason)) {
		return false
	}
	g.RotationReasons = append(g.RotationReasons, uint32(reason))
	return true
}

// groupView is the API's Group without members, bans or my_role.
func groupView(g *storagev1.GroupRecord, now time.Time) *groupv1.Group {
	required, reasons := rotationState(g, now)
	return &groupv1.Group{
		GroupId:           g.GetGroupId(),
		Owner:             g.GetOwner(),
		EncryptionMode:    mode(g),
		HistoryVisibility: groupv1.HistoryVisibility(g.GetHistoryVisibility()),
		RotationPolicy: &groupv1.RotationPolicy{
			Period:              g.GetRotationPeriod(),
			MaxMessagesPerEpoch: g.GetMaxMessagesPerEpoch(),
		},
		Epoch:              g.GetEpoch(),
		RotationRequired:   required,
		RotationReasons:    reasons,
		MemberCount:        g.GetMemberCount(),
		MembershipVersion:  g.GetMembershipVersion(),
		CreatedAt:          g.GetCreatedAt(),
		UpdatedAt:          g.GetUpdatedAt(),
		MembershipSequence: g.GetMembershipSequence(),
		MembershipHash:     g.GetMembershipHash(),
	}
}

// viewFor is groupView with the caller's role.
func viewFor(g *storagev1.GroupRecord, now time.Time, me *storagev1.GroupMemberRecord) *groupv1.Group {
	v := groupView(g, now)
	v.MyRole = role(me)
	return v
}

func memberView(m *storagev1.GroupMemberRecord) *groupv1.Member {
	return &groupv1.Member{Identity: m.GetIdentity(), Role: role(m), JoinedAt: m.GetJoinedAt(), AddedBy: m.GetAddedBy()}
}

// sortMembers orders members owner first, then by when they joined.
func sortMembers(ms []*storagev1.GroupMemberRecord) {
	slices.SortFunc(ms, func(a, b *storagev1.GroupMemberRecord) int {
		ao, bo := role(a) == groupv1.GroupRole_GROUP_ROLE_OWNER, role(b) == groupv1.GroupRole_GROUP_ROLE_OWNER
		switch {
		case ao && !bo:
			return -1
		case bo && !ao:
			return 1
		}
		return cmp.Compare(a.GetSequence(), b.GetSequence())
	})
}

func epochCommitView(e *storagev1.GroupEpochRecord) *groupv1.EpochCommit {
	if e == nil {
		return nil
	}
	return &groupv1.EpochCommit{
		Epoch:       e.GetEpoch(),
		Commit:      e.GetCommit(),
		CommittedBy: e.GetCommittedBy(),
		CommittedAt: e.GetCommittedAt(),
		CommitHash:  e.GetCommitHash(),
	}
}

func isNotFound(err error) bool { return errors.Is(err, errs.ErrNotFound) }

// loadAsMember reads the group and the caller's membership, refusing a non-member.
func loadAsMember(tx Tx, app, group, identity string) (*storagev1.GroupRecord, *storagev1.GroupMemberRecord, error) {
	g, err := tx.Group(app, group)
	if err != nil {
		return nil, nil, err
	}
	me, err := tx.Member(app, group, identity)
	if err != nil {
		return nil, nil, err
	}
	if me == nil {
		return nil, nil, errs.Permissionf("%s is not a member of group %s", identity, group)
	}
	return g, me, nil
}

// targetMember reads the membership of the identity a request names, refusing one that
// is not a member of g with NOT_FOUND (and why, when given, appended to the message).
func targetMember(tx Tx, g *storagev1.GroupRecord, identity, why string) (*storagev1.GroupMemberRecord, error) {
	m, err := tx.Member(g.GetAppId(), g.GetGroupId(), identity)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errs.NotFoundf("%s is not a member of group %s%s", identity, g.GetGroupId(), why)
	}
	return m, nil
}

// loadAsManager is loadAsMember for the owner and admins.
func loadAsManager(tx Tx, app, group, identity, what string) (*storagev1.GroupRecord, *storagev1.GroupMemberRecord, error) {
	g, me, err := loadAsMember(tx, app, group, identity)
	if err != nil {
		return nil, nil, err
	}
	if !isManager(me) {
		return nil, nil, errs.Permissionf("only an admin or the owner of group %s may %s; %s is a member", group, what, identity)
	}
	return g, me, nil
}

// loadAsOwner is loadAsMember for the owner.
func loadAsOwner(tx Tx, app, group, identity, what string) (*storagev1.GroupRecord, *storagev1.GroupMemberRecord, error) {
	g, me, err := loadAsMember(tx, app, group, identity)
	if err != nil {
		return nil, nil, err
	}
	if role(me) != groupv1.GroupRole_GROUP_ROLE_OWNER {
		return nil, nil, errs.Permissionf("only the owner of group %s may %s", group, what)
	}
	return g, me, nil
}

// touch records a change of the group at now.
func touch(g *storagev1.GroupRecord, now time.Time) { g.UpdatedAt = timestamppb.New(now) }

// putTouched writes g, changed at now.
func putTouched(tx Tx, g *storagev1.GroupRecord, now time.Time) error {
	touch(g, now)
	return tx.PutGroup(g)
}

// membershipChanged bumps the membership version.
func membershipChanged(g *storagev1.GroupRecord, now time.Time) {
	g.MembershipVersion++
	touch(g, now)
}
