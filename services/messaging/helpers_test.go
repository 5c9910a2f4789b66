package messaging

import (
	"context"
	"encoding/binary"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/umbra-e2ee/umbra/pkg/auth"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// testIdentity is a well-formed user identity of no one in particular.
func testIdentity(i int) string {
	b := make([]byte, 20)
	binary.BigEndian.PutUint64(b[12:], uint64(i))
	return "u_" + b32.EncodeToString(b)
}

// longLived gives users tokens that outlive the clock jumps of retention tests.
func (e *env) longLived(t testing.TB, us ...user) {
	t.Helper()
	for i := range us {
		us[i].token = e.token(t, us[i], 24*time.Hour)
	}
}

func durationOf(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// sub is an open Subscribe stream whose items a goroutine collects.
type sub struct {
	cancel context.CancelFunc
	items  chan *messagingv1.SubscribeResponse
	done   chan error // the stream's end
}

// subscribe opens a stream for u. after nil starts live; heartbeat 0 is the default.
func (e *env) subscribe(t testing.TB, u user, after *uint64, heartbeat time.Duration) *sub {
	t.Helper()
	req := &messagingv1.SubscribeRequest{AfterInboxSequence: after}
	if heartbeat > 0 {
		req.HeartbeatInterval = durationOf(heartbeat)
	}
	return subscribeOn(t, u.ctx(), e.client, req)
}

// subscribeOn opens a stream with req on c, as the caller of ctx, until the test ends.
func subscribeOn(t testing.TB, ctx context.Context, c messagingv1.MessagingServiceClient, req *messagingv1.SubscribeRequest) *sub {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.Subscribe(ctx, req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &sub{cancel: cancel, items: make(chan *messagingv1.SubscribeResponse, 1<<16), done: make(chan error, 1)}
	go func() {
		for {
			it, err := stream.Recv()
			if err != nil {
				s.done <- err
				return
			}
			s.items <- it
		}
	}()
	t.Cleanup(cancel)
	return s
}

// next returns the stream's next item, failing the test after timeout or at its end.
func (s *sub) next(t testing.TB, timeout time.Duration) *messagingv1.SubscribeResponse {
	t.Helper()
	select {
	case it := <-s.items:
		return it
	case err := <-s.done:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(timeout):
		t.Fatalf("no item within %s", timeout)
	}
	return nil
}

// nextItem returns the next message or event, skipping heartbeats.
func (s *sub) nextItem(t testing.TB) *messagingv1.SubscribeResponse {
	t.Helper()
	for {
		if it := s.next(t, 10*time.Second); it.GetHeartbeat() == nil {
			return it
		}
	}
}

// untilCaughtUp returns the messages and events up to the first heartbeat.
func (s *sub) untilCaughtUp(t testing.TB) ([]*messagingv1.SubscribeResponse, *messagingv1.SubscribeResponse) {
	t.Helper()
	var out []*messagingv1.SubscribeResponse
	for {
		it := s.next(t, 10*time.Second)
		if it.GetHeartbeat() != nil {
			return out, it
		}
		out = append(out, it)
	}
}

// end waits for the stream to end and returns its error.
func (s *sub) end(t testing.TB, timeout time.Duration) error {
	t.Helper()
	for {
		select {
		case <-s.items:
		case err := <-s.done:
			return err
		case <-time.After(timeout):
			t.Fatalf("stream still open after %s", timeout)
			return nil
		}
	}
}

// fakeGroupService stands in for the group service, which is built in another issue:
// the three internal methods the messaging service calls, over real gRPC behind the
// production interceptors (so the service token is checked), with the semantics
// group.proto gives them.
type fakeGroupService struct {
	groupv1.UnimplementedGroupServiceServer
	mu     sync.Mutex
	groups map[string]*fakeGroup // app 0 group
	// pageSize bounds ListMemberIdentities pages, to exercise paging.
	pageSize int
	calls    map[string]int
}

type fakeGroup struct {
	members   map[string]time.Time // identity -> joined at
	mode      groupv1.EncryptionMode
	epoch     uint64
	rotation  bool
	sinceJoin bool
	version   uint64
}

func newFakeGroupService() *fakeGroupService {
	return &fakeGroupService{groups: map[string]*fakeGroup{}, pageSize: 2, calls: map[string]int{}}
}

// create makes a group with members, joined at at, in OPTIONAL mode at epoch 1.
func (f *fakeGroupService) create(app, group string, at time.Time, members ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := &fakeGroup{members: map[string]time.Time{}, mode: groupv1.EncryptionMode_ENCRYPTION_MODE_OPTIONAL, epoch: 1, version: 1}
	for _, m := range members {
		g.members[m] = at
	}
	f.groups[key2(app, group)] = g
}

// update changes a group under the lock.
func (f *fakeGroupService) update(app, group string, fn func(g *fakeGroup)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f.groups[key2(app, group)])
}

func (f *fakeGroupService) count(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// answer answers one call of method about a group of app under the lock: the caller
// must be an internal one and the group must exist; fn makes the answer from it.
func answer[Resp any](f *fakeGroupService, ctx context.Context, method, app, group string, fn func(g *fakeGroup) (Resp, error)) (Resp, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var none Resp
	if p, ok := auth.FromContext(ctx); !ok || p.Policy != auth.Internal {
		return none, status.Error(codes.PermissionDenied, "not an internal caller")
	}
	f.calls[method]++
	g := f.groups[key2(app, group)]
	if g == nil {
		return none, status.Errorf(codes.NotFound, "group %s not found", group)
	}
	return fn(g)
}

func (f *fakeGroupService) AuthorizeSend(ctx context.Context, req *groupv1.AuthorizeSendRequest) (*groupv1.AuthorizeSendResponse, error) {
	return answer(f, ctx, "AuthorizeSend", req.GetAppId(), req.GetGroupId(), func(g *fakeGroup) (*groupv1.AuthorizeSendResponse, error) {
		if _, ok := g.members[req.GetSender()]; !ok {
			return nil, status.Errorf(codes.PermissionDenied, "%s is not a member of group %s", req.GetSender(), req.GetGroupId())
		}
		encrypted := req.GetKind() == groupv1.MessageKind_MESSAGE_KIND_ENCRYPTED
		switch {
		case !encrypted && g.mode == groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED:
			return nil, status.Error(codes.FailedPrecondition, "group requires encryption")
		case encrypted && (req.GetEpoch() != g.epoch || g.rotation):
			st, _ := status.New(codes.FailedPrecondition, "epoch required").WithDetails(&groupv1.EpochRequired{
				GroupId: req.GetGroupId(), CurrentEpoch: g.epoch, MessageEpoch: req.GetEpoch(), RotationRequired: g.rotation,
				RotationReasons: []groupv1.RotationReason{groupv1.RotationReason_ROTATION_REASON_MEMBERSHIP_CHANGED},
			})
			return nil, st.Err()
		}
		return &groupv1.AuthorizeSendResponse{Epoch: g.epoch, MembershipVersion: g.version, EncryptionMode: g.mode}, nil
	})
}

func (f *fakeGroupService) CheckMembership(ctx context.Context, req *groupv1.CheckMembershipRequest) (*groupv1.CheckMembershipResponse, error) {
	return answer(f, ctx, "CheckMembership", req.GetAppId(), req.GetGroupId(), func(g *fakeGroup) (*groupv1.CheckMembershipResponse, error) {
		resp := &groupv1.CheckMembershipResponse{EncryptionMode: g.mode, Epoch: g.epoch, RotationRequired: g.rotation, MembershipVersion: g.version}
		if joined, ok := g.members[req.GetIdentity()]; ok {
			resp.Member, resp.Role, resp.JoinedAt = true, groupv1.GroupRole_GROUP_ROLE_MEMBER, timestamppb.New(joined)
			if g.sinceJoin {
				resp.HistoryVisibleFrom = timestamppb.New(joined)
			}
		}
		return resp, nil
	})
}

func (f *fakeGroupService) ListMemberIdentities(ctx context.Context, req *groupv1.ListMemberIdentitiesRequest) (*groupv1.ListMemberIdentitiesResponse, error) {
	return answer(f, ctx, "ListMemberIdentities", req.GetAppId(), req.GetGroupId(), func(g *fakeGroup) (*groupv1.ListMemberIdentitiesResponse, error) {
		ids := slices.Sorted(maps.Keys(g.members))
		start := 0
		if tok := req.GetPageToken(); tok != "" {
			start, _ = slices.BinarySearch(ids, tok)
		}
		end := min(start+f.pageSize, len(ids))
		resp := &groupv1.ListMemberIdentitiesResponse{Identities: ids[start:end], MembershipVersion: g.version}
		if end < len(ids) {
			resp.NextPageToken = ids[end]
		}
		return resp, nil
	})
}
