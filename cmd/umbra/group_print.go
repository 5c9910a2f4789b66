package main

// The group commands' reading and printing: a group's messages and events, its members,
// the user's groups and invitations, and the names of modes, roles and identities.

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/ident"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// listenGroup prints the group's messages, decrypted, and its events as they arrive,
// resuming where the last listen of this group stopped.
func listenGroup(ctx context.Context, stdout, stderr io.Writer, c *sdk.Client, f *clientFlags, s *session, g *sdk.Group, name string, fromStart, untilIdle bool) error {
	dir, err := f.profileDir()
	if err != nil {
		return err
	}
	cursorFile := filepath.Join(dir, "group-cursor-"+g.ID)
	after := listenCursor(cursorFile, fromStart)
	if after == nil {
		fmt.Fprintf(stderr, "listening to %s as %s (new messages only; --from-start replays the stored ones)\n", name, s.Name)
	}
	names := map[string]string{s.Identity: "me"}
	return listenFrom(ctx, c, after, cursorFile, untilIdle, func(item *messagingv1.SubscribeResponse) {
		switch it := item.GetItem().(type) {
		case *messagingv1.SubscribeResponse_Message:
			if it.Message.GetConversationId() == g.ID {
				printMessage(ctx, stdout, c, f, names, it.Message)
			}
		case *messagingv1.SubscribeResponse_Event:
			if ev, ok := sdk.GroupEvent(item); ok && ev.GetGroupId() == g.ID {
				fmt.Fprintf(stdout, "[%s] %s\n", ev.GetOccurredAt().AsTime().Local().Format(time.TimeOnly), describeGroupEvent(f, ev))
			}
		}
	})
}

// groupHistory prints the group's stored messages that the user may read, decrypted,
// oldest first. Unlike listen, which follows the user's own stream (what arrived since
// they joined), it reads the conversation itself: with history visibility SHARED that
// is every retained message, readable once a member has shared the older keys.
func groupHistory(ctx context.Context, w io.Writer, c *sdk.Client, f *clientFlags, s *session, groupID string) error {
	names := map[string]string{s.Identity: "me"}
	zero := uint64(0)
	req := &messagingv1.HistoryRequest{ConversationId: groupID, AfterSequence: &zero, PageSize: 500}
	for {
		page, err := c.History(ctx, req)
		if err != nil {
			return err
		}
		for _, m := range page.GetMessages() {
			printMessage(ctx, w, c, f, names, m)
		}
		if page.GetNextPageToken() == "" {
			return nil
		}
		req = &messagingv1.HistoryRequest{ConversationId: groupID, PageToken: page.GetNextPageToken()}
	}
}

// listMembers prints the group's members and their roles as the membership chain this
// client verified yields them (not the service's word), with the chain's head.
func listMembers(ctx context.Context, w io.Writer, f *clientFlags, g *sdk.Group, name string) error {
	m, err := g.Membership(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: %d members, verified from %d signed membership statements (head %x)\n", name, m.MemberCount(), m.Sequence(), m.Head()[:8])
	for _, id := range m.Members() {
		fmt.Fprintf(w, "  %s  %s\n", f.displayName(id), roleName(groupv1.GroupRole(m.Role(id))))
	}
	return nil
}

// listInvitations prints the user's pending invitations.
func listInvitations(ctx context.Context, w io.Writer, c *sdk.Client, f *clientFlags) error {
	invs, err := c.Invitations(ctx)
	if err != nil {
		return err
	}
	if len(invs) == 0 {
		fmt.Fprintln(w, "no pending invitations")
	}
	for _, inv := range invs {
		fmt.Fprintf(w, "%s invited you to %s until %s\n", f.displayName(inv.GetInviter()), inv.GetGroupId(), inv.GetExpiresAt().AsTime().Local().Format(time.RFC3339))
	}
	return nil
}

// listGroups prints the groups the user is a member of, with the user's role.
func listGroups(ctx context.Context, w io.Writer, c *sdk.Client, f *clientFlags) error {
	groups, err := c.MyGroups(ctx)
	if err != nil {
		return err
	}
	if len(groups) == 0 {
		fmt.Fprintln(w, "no groups")
	}
	for _, g := range groups {
		fmt.Fprintf(w, "%s  %s, %d members, owner %s, encryption %s, epoch %d\n",
			g.GetGroupId(), roleName(g.GetMyRole()), g.GetMemberCount(), f.displayName(g.GetOwner()), modeName(g.GetEncryptionMode()), g.GetEpoch())
	}
	return nil
}

// describeGroupEvent renders a group event in a line.
func describeGroupEvent(f *clientFlags, ev *groupv1.GroupEvent) string {
	who := make([]string, len(ev.GetIdentities()))
	for i, id := range ev.GetIdentities() {
		who[i] = f.displayName(id)
	}
	actor := f.displayName(ev.GetActor())
	list := strings.Join(who, ", ")
	switch ev.GetKind() {
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_CREATED:
		return actor + " created the group"
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_DELETED:
		return "the group was deleted"
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_MEMBERS_ADDED:
		return list + " joined"
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_MEMBER_REMOVED:
		return actor + " removed " + list
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_MEMBER_LEFT:
		return actor + " left"
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_MEMBER_BANNED:
		return actor + " banned " + list
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_MEMBER_UNBANNED:
		return actor + " lifted the ban of " + list
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_ROLE_CHANGED:
		return list + " is " + roleName(ev.GetRole()) + " now"
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_JOIN_REQUESTED:
		return actor + " asked to join"
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_JOIN_REQUEST_DECLINED:
		return actor + " declined the join request of " + list
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_INVITED:
		return actor + " invited " + list
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_INVITATION_DECLINED:
		return actor + " declined the invitation"
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_SETTINGS_CHANGED:
		return "settings changed: encryption " + modeName(ev.GetGroup().GetEncryptionMode())
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_ROTATION_REQUIRED:
		return fmt.Sprintf("a new key is required after epoch %d", ev.GetEpoch())
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_EPOCH_COMMITTED:
		return fmt.Sprintf("%s started epoch %d", actor, ev.GetEpoch())
	case groupv1.GroupEventKind_GROUP_EVENT_KIND_EPOCH_KEYS_SHARED:
		return actor + " shared older keys with you"
	}
	return ev.GetKind().String()
}

// displayName is a profile's name on this machine for identity, or the identity.
func (f *clientFlags) displayName(identity string) string {
	if identity == "" {
		return "the service"
	}
	if n := f.profileName(identity); n != "" {
		return n
	}
	return identity
}

// resolveGroup turns a group name into a group identity: an identity stays as it is,
// an app group id is resolved with the API key.
func (f *clientFlags) resolveGroup(ctx context.Context, name string) (string, error) {
	if ident.ValidGroup("group", name) == nil {
		return name, nil
	}
	resp, err := f.appResolve(ctx, &identityv1.ResolveIdentitiesRequest{Guids: []string{name}})
	if err != nil {
		return "", fmt.Errorf("resolve group %s: %w", name, err)
	}
	return resp.GetGroups()[name], nil
}

// parseEnum reads s, in any case, as one of names; what and want name the setting and
// the names in the error.
func parseEnum[E any](what, s string, names map[string]E, want string) (E, error) {
	if v, ok := names[strings.ToLower(s)]; ok {
		return v, nil
	}
	var zero E
	return zero, fmt.Errorf("%s %q: want %s", what, s, want)
}

func parseMode(s string) (groupv1.EncryptionMode, error) {
	return parseEnum("encryption mode", s, map[string]groupv1.EncryptionMode{
		"required": groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED,
		"optional": groupv1.EncryptionMode_ENCRYPTION_MODE_OPTIONAL,
		"off":      groupv1.EncryptionMode_ENCRYPTION_MODE_OFF,
	}, "required, optional or off")
}

func modeName(m groupv1.EncryptionMode) string {
	return strings.ToLower(strings.TrimPrefix(m.String(), "ENCRYPTION_MODE_"))
}

// parseRole reads the role `group role` may set: ownership moves only with `transfer`.
func parseRole(s string) (groupv1.GroupRole, error) {
	return parseEnum("role", s, map[string]groupv1.GroupRole{
		"admin":  groupv1.GroupRole_GROUP_ROLE_ADMIN,
		"member": groupv1.GroupRole_GROUP_ROLE_MEMBER,
	}, "admin or member (ownership moves with umbra group transfer)")
}

func roleName(r groupv1.GroupRole) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "GROUP_ROLE_"))
}

func parseHistory(s string) (groupv1.HistoryVisibility, error) {
	return parseEnum("history", s, map[string]groupv1.HistoryVisibility{
		"since-join": groupv1.HistoryVisibility_HISTORY_VISIBILITY_SINCE_JOIN,
		"shared":     groupv1.HistoryVisibility_HISTORY_VISIBILITY_SHARED,
	}, "since-join or shared")
}
