package messaging

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/errs"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
)

// DefaultGroupTimeout bounds each call to the group service.
const DefaultGroupTimeout = 5 * time.Second

// GroupClient is Groups over gRPC. Its connection carries the service credential, as
// the group service's methods for this service are internal.
type GroupClient struct {
	Client groupv1.GroupServiceClient
	// Timeout bounds each call; 0 means DefaultGroupTimeout.
	Timeout time.Duration
}

var _ Groups = GroupClient{}

func (g GroupClient) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	t := g.Timeout
	if t == 0 {
		t = DefaultGroupTimeout
	}
	return context.WithTimeout(ctx, t)
}

// AuthorizeSend implements Groups.
func (g GroupClient) AuthorizeSend(ctx context.Context, req *groupv1.AuthorizeSendRequest) (*groupv1.AuthorizeSendResponse, error) {
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	resp, err := g.Client.AuthorizeSend(ctx, req)
	return resp, groupError(err)
}

// CheckMembership implements Groups.
func (g GroupClient) CheckMembership(ctx context.Context, req *groupv1.CheckMembershipRequest) (*groupv1.CheckMembershipResponse, error) {
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	resp, err := g.Client.CheckMembership(ctx, req)
	return resp, groupError(err)
}

// ListMemberIdentities implements Groups.
func (g GroupClient) ListMemberIdentities(ctx context.Context, req *groupv1.ListMemberIdentitiesRequest) (*groupv1.ListMemberIdentitiesResponse, error) {
	ctx, cancel := g.ctx(ctx)
	defer cancel()
	resp, err := g.Client.ListMemberIdentities(ctx, req)
	return resp, groupError(err)
}

// groupError keeps the group service's answers and turns a group service that cannot
// answer into UNAVAILABLE, without the connection's details. Group conversations are
// never allowed by default.
func groupError(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return errs.Unavailablef("the group service cannot be reached: group conversations are refused until it answers")
	}
	switch st.Code() {
	case codes.Unimplemented:
		return errs.Unavailablef("group conversations need the group service, which does not serve them yet: group messages are refused")
	case codes.Unavailable, codes.DeadlineExceeded:
		return errs.Unavailablef("the group service cannot be reached (%s): group conversations are refused until it answers", st.Code())
	}
	return err
}

// noGroups is the Groups of a server without a group service.
type noGroups struct{}

func (noGroups) err() error {
	return errs.Unavailablef("group conversations need the group service, and this server has none configured: group messages are refused")
}

func (n noGroups) AuthorizeSend(context.Context, *groupv1.AuthorizeSendRequest) (*groupv1.AuthorizeSendResponse, error) {
	return nil, n.err()
}

func (n noGroups) CheckMembership(context.Context, *groupv1.CheckMembershipRequest) (*groupv1.CheckMembershipResponse, error) {
	return nil, n.err()
}

func (n noGroups) ListMemberIdentities(context.Context, *groupv1.ListMemberIdentitiesRequest) (*groupv1.ListMemberIdentitiesResponse, error) {
	return nil, n.err()
}

// maxGroupMembers bounds a member list read from the group service (whose own limit is
// 10,000 by default, configurable).
const maxGroupMembers = 100_000

// defaultMemberCacheIDs bounds the identities of the member lists the service keeps.
const defaultMemberCacheIDs = 1_000_000

// memberCache keeps groups' member lists by membership version, so that a group's
// messages are fanned out without listing its members every time. It holds at most
// maxIDs identities in all, dropping the lists cached first.
type memberCache struct {
	mu     sync.Mutex
	maxIDs int
	total  int
	lists  map[string]memberList // app 0 group
	order  []string
}

type memberList struct {
	version uint64
	ids     []string
}

func newMemberCache(maxIDs int) *memberCache {
	return &memberCache{maxIDs: maxIDs, lists: map[string]memberList{}}
}

func (c *memberCache) get(app, group string, version uint64) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.lists[key2(app, group)]
	if !ok || l.version != version {
		return nil, false
	}
	return l.ids, true
}

func (c *memberCache) put(app, group string, version uint64, ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := key2(app, group)
	if old, ok := c.lists[k]; ok {
		c.total -= len(old.ids)
		c.order = slices.DeleteFunc(c.order, func(s string) bool { return s == k })
	}
	for len(c.order) > 0 && c.total+len(ids) > c.maxIDs {
		c.total -= len(c.lists[c.order[0]].ids)
		delete(c.lists, c.order[0])
		c.order = c.order[1:]
	}
	c.lists[k] = memberList{version: version, ids: ids}
	c.order = append(c.order, k)
	c.total += len(ids)
}

// members returns a group's member identities, sorted, and their membership version:
// version, or a later one if the membership changed since.
func (s *Server) members(ctx context.Context, app, group string, version uint64) ([]string, uint64, error) {
	if ids, ok := s.memberCache.get(app, group, version); ok {
		return ids, version, nil
	}
	for range 3 {
		ids, ver, err := s.listMembers(ctx, app, group)
		if status.Code(err) == codes.Aborted {
			continue // the membership changed between pages: read it again
		}
		if err != nil {
			return nil, 0, err
		}
		s.memberCache.put(app, group, ver, ids)
		return ids, ver, nil
	}
	return nil, 0, errs.Unavailablef("the membership of group %s kept changing while it was read; retry", group)
}

func (s *Server) listMembers(ctx context.Context, app, group string) ([]string, uint64, error) {
	seen := map[string]struct{}{}
	var version uint64
	token := ""
	for page := 0; ; page++ {
		resp, err := s.groups.ListMemberIdentities(ctx, &groupv1.ListMemberIdentitiesRequest{AppId: app, GroupId: group, PageToken: token})
		if err != nil {
			return nil, 0, err
		}
		if page == 0 {
			version = resp.GetMembershipVersion()
		} else if resp.GetMembershipVersion() != version {
			return nil, 0, status.Error(codes.Aborted, "membership changed")
		}
		for _, id := range resp.GetIdentities() {
			if err := ident.ValidUser("member", id); err != nil {
				// The group service's fault, not the caller's: INTERNAL, not INVALID_ARGUMENT.
				return nil, 0, fmt.Errorf("messaging: the group service listed a malformed member of %s: %v", group, err)
			}
			seen[id] = struct{}{}
		}
		if len(seen) > maxGroupMembers {
			return nil, 0, errs.Unavailablef("group %s has more than %d members, more than this service fans a message out to", group, maxGroupMembers)
		}
		if token = resp.GetNextPageToken(); token == "" {
			return sortedKeys(seen), version, nil
		}
	}
}
