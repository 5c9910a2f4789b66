package main

import (
	"context"
	"flag"
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

// A groupCommand is one `umbra group` subcommand.
type groupCommand struct {
	name, usage string
	// minArgs and maxArgs bound the arguments it takes after its flags (maxArgs -1: no
	// limit). The first argument, when there is one, is the group.
	minArgs, maxArgs int
	// flags, when set, defines its own flags, besides the client's.
	flags func(fs *flag.FlagSet, o *groupOptions)
	run   func(gc *groupCall) error
}

// groupOptions are the values of the subcommands' own flags.
type groupOptions struct {
	members                  listFlag
	mode, history            string
	lift, decline, plaintext bool
	fromStart, untilCaughtUp bool
	ttl                      time.Duration
}

// groupCommands are the group subcommands, in the order their usage lists them.
var groupCommands = []groupCommand{
	{"create", "[--members bob,carol] [--mode required|optional|off] [--history since-join|shared] <group>", 1, 1, createFlags, (*groupCall).create},
	{"list", "   (the groups you are a member of)", 0, 0, nil, (*groupCall).list},
	{"members", "<group>   (the members, as the group's signed membership chain says)", 1, 1, nil, (*groupCall).members},
	{"delete", "<group>   (owner only)", 1, 1, nil, (*groupCall).delete},
	{"add", "<group> <user>...", 2, -1, nil, (*groupCall).add},
	{"remove", "<group> <user>", 2, 2, nil, (*groupCall).remove},
	{"ban", "[--lift] <group> <user>", 2, 2, liftFlag, (*groupCall).ban},
	{"leave", "<group>", 1, 1, nil, (*groupCall).leave},
	{"join", "<group>", 1, 1, nil, (*groupCall).join},
	{"approve", "[--decline] <group> [<user>]   (without a user: list the pending requests)", 1, 2, declineFlag, (*groupCall).approve},
	{"invite", "[--ttl 24h] <group> <user>", 2, 2, ttlFlag, (*groupCall).invite},
	{"accept", "[--decline] [<group>]   (without a group: list your invitations)", 0, 1, declineFlag, (*groupCall).accept},
	{"mode", "<group> <required|optional|off>", 2, 2, nil, (*groupCall).mode},
	{"role", "<group> <user> <admin|member>   (owner only)", 3, 3, nil, (*groupCall).role},
	{"transfer", "<group> <user>   (hand ownership to a member; owner only)", 2, 2, nil, (*groupCall).transfer},
	{"share", "<group> <user>   (give a later member the keys of older messages: groups created with --history shared)", 2, 2, nil, (*groupCall).share},
	{"send", "[--plaintext] <group> [message]   (message from standard input if absent)", 1, -1, plaintextFlag, (*groupCall).send},
	{"listen", "[--from-start] [--until-caught-up] <group>", 1, 1, listenFlags, (*groupCall).listen},
	{"history", "<group>   (the group's stored messages you may read, oldest first)", 1, 1, nil, (*groupCall).history},
}

func createFlags(fs *flag.FlagSet, o *groupOptions) {
	fs.Var(&o.members, "members", "initial members besides you: names or identities, comma-separated")
	fs.StringVar(&o.mode, "mode", "required", "encryption mode: required, optional or off")
	fs.StringVar(&o.history, "history", "since-join", "what members can read: since-join or shared")
}

func liftFlag(fs *flag.FlagSet, o *groupOptions) {
	fs.BoolVar(&o.lift, "lift", false, "lift the ban instead")
}

func declineFlag(fs *flag.FlagSet, o *groupOptions) {
	fs.BoolVar(&o.decline, "decline", false, "decline instead")
}

func ttlFlag(fs *flag.FlagSet, o *groupOptions) {
	fs.DurationVar(&o.ttl, "ttl", 0, "how long the invitation stays open (default: the server's, 7 days)")
}

func plaintextFlag(fs *flag.FlagSet, o *groupOptions) {
	fs.BoolVar(&o.plaintext, "plaintext", false, "send unencrypted (groups whose mode is optional or off)")
}

func listenFlags(fs *flag.FlagSet, o *groupOptions) {
	fs.BoolVar(&o.fromStart, "from-start", false, "replay every stored message instead of resuming")
	fs.BoolVar(&o.untilCaughtUp, "until-caught-up", false, "stop once every stored message is printed")
}

// runGroup is `umbra group <subcommand>`: groups and their encrypted conversation.
// Groups are named by the app's own group id (resolved with the API key) or by their
// group identity ("g_...").
func runGroup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	names := make([]string, len(groupCommands))
	for i, c := range groupCommands {
		names[i] = c.name
	}
	sub, args, err := subcommand("group", args, stderr, names...)
	if err != nil {
		return err
	}
	cmd := groupCommands[slices.Index(names, sub)]
	fs := newFlagSet("group "+sub, stderr)
	gc := &groupCall{ctx: ctx, stdout: stdout, stderr: stderr}
	gc.f.register(fs)
	if cmd.flags != nil {
		cmd.flags(fs, &gc.opts)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: umbra group %s %s\n", sub, cmd.usage)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	gc.pos = fs.Args()
	if len(gc.pos) < cmd.minArgs || cmd.maxArgs >= 0 && len(gc.pos) > cmd.maxArgs {
		fs.Usage()
		return errUsage
	}
	if gc.c, gc.s, err = gc.f.client(ctx); err != nil {
		return err
	}
	defer gc.c.Close()
	if len(gc.pos) > 0 {
		gc.name = gc.pos[0]
		if gc.gid, err = gc.f.resolveGroup(ctx, gc.name); err != nil {
			return err
		}
		gc.g = gc.c.Group(gc.gid)
	}
	return cmd.run(gc)
}

// A groupCall is one run of a group subcommand.
type groupCall struct {
	ctx            context.Context
	stdout, stderr io.Writer
	f              clientFlags
	opts           groupOptions
	c              *sdk.Client
	s              *session
	// pos are the arguments after the flags. The first, name, is the group, whose
	// identity is gid; gid is empty, and g nil, when there are none.
	pos  []string
	name string
	gid  string
	g    *sdk.Group
}

// users resolves the users named after the group.
func (gc *groupCall) users() ([]string, error) { return gc.f.resolve(gc.ctx, gc.pos[1:]) }

// user resolves the one user named after the group.
func (gc *groupCall) user() (string, error) {
	ids, err := gc.users()
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

func (gc *groupCall) create() error {
	m, err := parseMode(gc.opts.mode)
	if err != nil {
		return err
	}
	h, err := parseHistory(gc.opts.history)
	if err != nil {
		return err
	}
	ids, err := gc.f.resolve(gc.ctx, gc.opts.members)
	if err != nil {
		return err
	}
	_, info, err := gc.c.CreateGroup(gc.ctx, gc.gid, sdk.CreateGroupOptions{Members: ids, EncryptionMode: m, HistoryVisibility: h})
	if err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, "group %s created (%s): %d members, you own it; encryption %s\n", gc.name, gc.gid, info.GetMemberCount(), modeName(info.GetEncryptionMode()))
	return nil
}

func (gc *groupCall) list() error { return listGroups(gc.ctx, gc.stdout, gc.c, &gc.f) }

func (gc *groupCall) members() error { return listMembers(gc.ctx, gc.stdout, &gc.f, gc.g, gc.name) }

func (gc *groupCall) delete() error {
	if err := gc.g.Delete(gc.ctx); err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, "group %s deleted, with its keys and pending requests; its members were told\n", gc.name)
	return nil
}

func (gc *groupCall) add() error {
	ids, err := gc.users()
	if err != nil {
		return err
	}
	added, err := gc.g.Add(gc.ctx, ids...)
	if err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, "added %d of %d to %s; the next message starts a new epoch\n", len(added), len(ids), gc.name)
	return nil
}

func (gc *groupCall) remove() error {
	id, err := gc.user()
	if err != nil {
		return err
	}
	if err := gc.g.Remove(gc.ctx, id); err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, "removed %s from %s; the next message starts a new epoch without them\n", gc.pos[1], gc.name)
	return nil
}

func (gc *groupCall) ban() error {
	id, err := gc.user()
	if err != nil {
		return err
	}
	if gc.opts.lift {
		if err := gc.g.Unban(gc.ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(gc.stdout, "lifted the ban of %s in %s\n", gc.pos[1], gc.name)
		return nil
	}
	removed, err := gc.g.Ban(gc.ctx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, "banned %s from %s", gc.pos[1], gc.name)
	if removed {
		fmt.Fprint(gc.stdout, " (removed: the next message starts a new epoch without them)")
	}
	fmt.Fprintln(gc.stdout)
	return nil
}

func (gc *groupCall) leave() error {
	resp, err := gc.g.Leave(gc.ctx)
	if err != nil {
		return err
	}
	switch {
	case resp.GetGroupDeleted():
		fmt.Fprintf(gc.stdout, "left %s, its last member: the group is deleted\n", gc.name)
	case resp.GetNewOwner() != "":
		fmt.Fprintf(gc.stdout, "left %s; %s owns it now\n", gc.name, gc.f.displayName(resp.GetNewOwner()))
	default:
		fmt.Fprintf(gc.stdout, "left %s\n", gc.name)
	}
	return nil
}

func (gc *groupCall) join() error {
	if _, err := gc.c.RequestJoin(gc.ctx, gc.gid); err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, "asked to join %s; an admin or the owner decides\n", gc.name)
	return nil
}

// approve approves or declines a join request, or without a user lists them.
func (gc *groupCall) approve() error {
	if len(gc.pos) == 1 {
		reqs, err := gc.g.JoinRequests(gc.ctx)
		if err != nil {
			return err
		}
		if len(reqs) == 0 {
			fmt.Fprintf(gc.stdout, "no pending join requests in %s\n", gc.name)
		}
		for _, r := range reqs {
			fmt.Fprintf(gc.stdout, "%s asked to join at %s\n", gc.f.displayName(r.GetIdentity()), r.GetCreatedAt().AsTime().Local().Format(time.RFC3339))
		}
		return nil
	}
	id, err := gc.user()
	if err != nil {
		return err
	}
	if gc.opts.decline {
		if err := gc.g.DeclineJoin(gc.ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(gc.stdout, "declined %s's request to join %s\n", gc.pos[1], gc.name)
		return nil
	}
	if err := gc.g.ApproveJoin(gc.ctx, id); err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, "%s is a member of %s now\n", gc.pos[1], gc.name)
	return nil
}

func (gc *groupCall) invite() error {
	id, err := gc.user()
	if err != nil {
		return err
	}
	inv, err := gc.g.Invite(gc.ctx, id, gc.opts.ttl)
	if err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, "invited %s to %s until %s\n", gc.pos[1], gc.name, inv.GetExpiresAt().AsTime().Local().Format(time.RFC3339))
	return nil
}

// accept accepts or declines an invitation, or without a group lists them.
func (gc *groupCall) accept() error {
	if gc.g == nil {
		return listInvitations(gc.ctx, gc.stdout, gc.c, &gc.f)
	}
	if gc.opts.decline {
		if err := gc.c.DeclineInvitation(gc.ctx, gc.gid); err != nil {
			return err
		}
		fmt.Fprintf(gc.stdout, "declined the invitation to %s\n", gc.name)
		return nil
	}
	if _, err := gc.c.AcceptInvitation(gc.ctx, gc.gid); err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, "%s is a member of %s now\n", gc.s.Name, gc.name)
	return nil
}

func (gc *groupCall) mode() error {
	m, err := parseMode(gc.pos[1])
	if err != nil {
		return err
	}
	if err := gc.g.SetEncryptionMode(gc.ctx, m); err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, "%s: encryption %s\n", gc.name, modeName(m))
	return nil
}

func (gc *groupCall) role() error {
	role, err := parseRole(gc.pos[2])
	if err != nil {
		return err
	}
	ids, err := gc.f.resolve(gc.ctx, gc.pos[1:2])
	if err != nil {
		return err
	}
	if err := gc.g.SetRole(gc.ctx, ids[0], role); err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, "%s is %s of %s now\n", gc.pos[1], roleName(role), gc.name)
	return nil
}

func (gc *groupCall) transfer() error {
	id, err := gc.user()
	if err != nil {
		return err
	}
	if err := gc.g.TransferOwnership(gc.ctx, id); err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, "%s owns %s now; you are an admin\n", gc.pos[1], gc.name)
	return nil
}

func (gc *groupCall) share() error {
	id, err := gc.user()
	if err != nil {
		return err
	}
	n, err := gc.g.ShareHistory(gc.ctx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, "shared %d older keys of %s with %s\n", n, gc.name, gc.pos[1])
	return nil
}

func (gc *groupCall) send() error {
	msg, err := readInput(gc.pos[1:])
	if err != nil {
		return err
	}
	var resp *messagingv1.SendResponse
	if gc.opts.plaintext {
		resp, err = gc.g.SendPlaintext(gc.ctx, msg)
	} else {
		resp, err = gc.g.Send(gc.ctx, msg)
	}
	if err != nil {
		return gc.f.explain(err)
	}
	fmt.Fprintf(gc.stdout, "sent to %s: message %d\n", gc.name, resp.GetSequence())
	return nil
}

func (gc *groupCall) listen() error {
	return listenGroup(gc.ctx, gc.stdout, gc.stderr, gc.c, &gc.f, gc.s, gc.g, gc.name, gc.opts.fromStart, gc.opts.untilCaughtUp)
}

func (gc *groupCall) history() error {
	return groupHistory(gc.ctx, gc.stdout, gc.c, &gc.f, gc.s, gc.g.ID)
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
