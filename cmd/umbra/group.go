package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/ident"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// groupCommands are the group subcommands: the arguments each takes after its flags,
// and how many (maxArgs -1: no limit).
var groupCommands = []struct {
	name, usage      string
	minArgs, maxArgs int
}{
	{"create", "[--members bob,carol] [--mode required|optional|off] [--history since-join|shared] <group>", 1, 1},
	{"list", "   (the groups you are a member of)", 0, 0},
	{"members", "<group>   (the members, as the group's signed membership chain says)", 1, 1},
	{"delete", "<group>   (owner only)", 1, 1},
	{"add", "<group> <user>...", 2, -1},
	{"remove", "<group> <user>", 2, 2},
	{"ban", "[--lift] <group> <user>", 2, 2},
	{"leave", "<group>", 1, 1},
	{"join", "<group>", 1, 1},
	{"approve", "[--decline] <group> [<user>]   (without a user: list the pending requests)", 1, 2},
	{"invite", "[--ttl 24h] <group> <user>", 2, 2},
	{"accept", "[--decline] [<group>]   (without a group: list your invitations)", 0, 1},
	{"mode", "<group> <required|optional|off>", 2, 2},
	{"role", "<group> <user> <admin|member>   (owner only)", 3, 3},
	{"transfer", "<group> <user>   (hand ownership to a member; owner only)", 2, 2},
	{"share", "<group> <user>   (give a later member the keys of older messages: groups created with --history shared)", 2, 2},
	{"send", "[--plaintext] <group> [message]   (message from standard input if absent)", 1, -1},
	{"listen", "[--from-start] [--until-caught-up] <group>", 1, 1},
	{"history", "<group>   (the group's stored messages you may read, oldest first)", 1, 1},
}

// runGroup is `umbra group <subcommand>`: groups and their encrypted conversation.
// Groups are named by the app's own group id (resolved with the API key) or by their
// group identity ("g_...").
func runGroup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	names := make([]string, len(groupCommands))
	for i, gc := range groupCommands {
		names[i] = gc.name
	}
	sub, args, err := subcommand("group", args, stderr, names...)
	if err != nil {
		return err
	}
	cmd := groupCommands[slices.Index(names, sub)]
	fs := newFlagSet("group "+sub, stderr)
	var f clientFlags
	f.register(fs)
	members := listFlag{}
	var mode, history string
	var lift, decline, plaintext, fromStart, untilIdle bool
	var ttl time.Duration
	switch sub {
	case "create":
		fs.Var(&members, "members", "initial members besides you: names or identities, comma-separated")
		fs.StringVar(&mode, "mode", "required", "encryption mode: required, optional or off")
		fs.StringVar(&history, "history", "since-join", "what members can read: since-join or shared")
	case "ban":
		fs.BoolVar(&lift, "lift", false, "lift the ban instead")
	case "approve", "accept":
		fs.BoolVar(&decline, "decline", false, "decline instead")
	case "invite":
		fs.DurationVar(&ttl, "ttl", 0, "how long the invitation stays open (default: the server's, 7 days)")
	case "send":
		fs.BoolVar(&plaintext, "plaintext", false, "send unencrypted (groups whose mode is optional or off)")
	case "listen":
		fs.BoolVar(&fromStart, "from-start", false, "replay every stored message instead of resuming")
		fs.BoolVar(&untilIdle, "until-caught-up", false, "stop once every stored message is printed")
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: umbra group %s %s\n", sub, cmd.usage)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	pos := fs.Args()
	if len(pos) < cmd.minArgs || cmd.maxArgs >= 0 && len(pos) > cmd.maxArgs {
		fs.Usage()
		return errUsage
	}
	c, s, err := f.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if sub == "accept" && len(pos) == 0 {
		return listInvitations(ctx, stdout, c, &f)
	}
	if sub == "list" {
		return listGroups(ctx, stdout, c, &f)
	}
	groupName := pos[0]
	gid, err := f.resolveGroup(ctx, groupName)
	if err != nil {
		return err
	}
	g := c.Group(gid)
	users := func() ([]string, error) { return f.resolve(ctx, pos[1:]) }

	switch sub {
	case "create":
		m, err := parseMode(mode)
		if err != nil {
			return err
		}
		h, err := parseHistory(history)
		if err != nil {
			return err
		}
		ids, err := f.resolve(ctx, members)
		if err != nil {
			return err
		}
		_, info, err := c.CreateGroup(ctx, gid, sdk.CreateGroupOptions{Members: ids, EncryptionMode: m, HistoryVisibility: h})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "group %s created (%s): %d members, you own it; encryption %s\n", groupName, gid, info.GetMemberCount(), modeName(info.GetEncryptionMode()))
	case "add":
		ids, err := users()
		if err != nil {
			return err
		}
		added, err := g.Add(ctx, ids...)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "added %d of %d to %s; the next message starts a new epoch\n", len(added), len(ids), groupName)
	case "remove":
		ids, err := users()
		if err != nil {
			return err
		}
		if err := g.Remove(ctx, ids[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %s from %s; the next message starts a new epoch without them\n", pos[1], groupName)
	case "ban":
		ids, err := users()
		if err != nil {
			return err
		}
		if lift {
			if err := g.Unban(ctx, ids[0]); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "lifted the ban of %s in %s\n", pos[1], groupName)
			return nil
		}
		removed, err := g.Ban(ctx, ids[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "banned %s from %s", pos[1], groupName)
		if removed {
			fmt.Fprint(stdout, " (removed: the next message starts a new epoch without them)")
		}
		fmt.Fprintln(stdout)
	case "delete":
		if err := g.Delete(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "group %s deleted, with its keys and pending requests; its members were told\n", groupName)
	case "role":
		role, err := parseRole(pos[2])
		if err != nil {
			return err
		}
		ids, err := f.resolve(ctx, pos[1:2])
		if err != nil {
			return err
		}
		if err := g.SetRole(ctx, ids[0], role); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s is %s of %s now\n", pos[1], roleName(role), groupName)
	case "transfer":
		ids, err := users()
		if err != nil {
			return err
		}
		if err := g.TransferOwnership(ctx, ids[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s owns %s now; you are an admin\n", pos[1], groupName)
	case "share":
		ids, err := users()
		if err != nil {
			return err
		}
		n, err := g.ShareHistory(ctx, ids[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "shared %d older keys of %s with %s\n", n, groupName, pos[1])
	case "members":
		return listMembers(ctx, stdout, &f, g, groupName)
	case "leave":
		resp, err := g.Leave(ctx)
		if err != nil {
			return err
		}
		switch {
		case resp.GetGroupDeleted():
			fmt.Fprintf(stdout, "left %s, its last member: the group is deleted\n", groupName)
		case resp.GetNewOwner() != "":
			fmt.Fprintf(stdout, "left %s; %s owns it now\n", groupName, f.displayName(resp.GetNewOwner()))
		default:
			fmt.Fprintf(stdout, "left %s\n", groupName)
		}
	case "join":
		if _, err := c.RequestJoin(ctx, gid); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "asked to join %s; an admin or the owner decides\n", groupName)
	case "approve":
		if len(pos) == 1 {
			reqs, err := g.JoinRequests(ctx)
			if err != nil {
				return err
			}
			if len(reqs) == 0 {
				fmt.Fprintf(stdout, "no pending join requests in %s\n", groupName)
			}
			for _, r := range reqs {
				fmt.Fprintf(stdout, "%s asked to join at %s\n", f.displayName(r.GetIdentity()), r.GetCreatedAt().AsTime().Local().Format(time.RFC3339))
			}
			return nil
		}
		ids, err := users()
		if err != nil {
			return err
		}
		if decline {
			if err := g.DeclineJoin(ctx, ids[0]); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "declined %s's request to join %s\n", pos[1], groupName)
			return nil
		}
		if err := g.ApproveJoin(ctx, ids[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s is a member of %s now\n", pos[1], groupName)
	case "invite":
		ids, err := users()
		if err != nil {
			return err
		}
		inv, err := g.Invite(ctx, ids[0], ttl)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "invited %s to %s until %s\n", pos[1], groupName, inv.GetExpiresAt().AsTime().Local().Format(time.RFC3339))
	case "accept":
		if decline {
			if err := c.DeclineInvitation(ctx, gid); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "declined the invitation to %s\n", groupName)
			return nil
		}
		if _, err := c.AcceptInvitation(ctx, gid); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s is a member of %s now\n", s.Name, groupName)
	case "mode":
		m, err := parseMode(pos[1])
		if err != nil {
			return err
		}
		if err := g.SetEncryptionMode(ctx, m); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: encryption %s\n", groupName, modeName(m))
	case "send":
		msg, err := readInput(pos[1:])
		if err != nil {
			return err
		}
		var resp *messagingv1.SendResponse
		if plaintext {
			resp, err = g.SendPlaintext(ctx, msg)
		} else {
			resp, err = g.Send(ctx, msg)
		}
		if err != nil {
			return f.explain(err)
		}
		fmt.Fprintf(stdout, "sent to %s: message %d\n", groupName, resp.GetSequence())
	case "listen":
		return listenGroup(ctx, stdout, stderr, c, &f, s, g, groupName, fromStart, untilIdle)
	case "history":
		return groupHistory(ctx, stdout, c, &f, s, g.ID)
	}
	return nil
}

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
	var id string
	err := f.appCall(ctx, func(ctx context.Context, c identityv1.IdentityServiceClient) error {
		resp, err := c.ResolveIdentities(ctx, &identityv1.ResolveIdentitiesRequest{Guids: []string{name}})
		if err != nil {
			return err
		}
		id = resp.GetGroups()[name]
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("resolve group %s: %w", name, err)
	}
	return id, nil
}

func parseMode(s string) (groupv1.EncryptionMode, error) {
	switch strings.ToLower(s) {
	case "required":
		return groupv1.EncryptionMode_ENCRYPTION_MODE_REQUIRED, nil
	case "optional":
		return groupv1.EncryptionMode_ENCRYPTION_MODE_OPTIONAL, nil
	case "off":
		return groupv1.EncryptionMode_ENCRYPTION_MODE_OFF, nil
	}
	return 0, fmt.Errorf("encryption mode %q: want required, optional or off", s)
}

func modeName(m groupv1.EncryptionMode) string {
	return strings.ToLower(strings.TrimPrefix(m.String(), "ENCRYPTION_MODE_"))
}

// parseRole reads the role `group role` may set: ownership moves only with `transfer`.
func parseRole(s string) (groupv1.GroupRole, error) {
	switch strings.ToLower(s) {
	case "admin":
		return groupv1.GroupRole_GROUP_ROLE_ADMIN, nil
	case "member":
		return groupv1.GroupRole_GROUP_ROLE_MEMBER, nil
	}
	return 0, fmt.Errorf("role %q: want admin or member (ownership moves with umbra group transfer)", s)
}

func roleName(r groupv1.GroupRole) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "GROUP_ROLE_"))
}

func parseHistory(s string) (groupv1.HistoryVisibility, error) {
	switch strings.ToLower(s) {
	case "since-join":
		return groupv1.HistoryVisibility_HISTORY_VISIBILITY_SINCE_JOIN, nil
	case "shared":
		return groupv1.HistoryVisibility_HISTORY_VISIBILITY_SHARED, nil
	}
	return 0, fmt.Errorf("history %q: want since-join or shared", s)
}
