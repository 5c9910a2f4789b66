package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/sdk"
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

// onUser does act to the user the command names, and then prints done, a format of
// the user's name and the group's.
func (gc *groupCall) onUser(act func(ctx context.Context, identity string) error, done string) error {
	id, err := gc.user()
	if err != nil {
		return err
	}
	if err := act(gc.ctx, id); err != nil {
		return err
	}
	fmt.Fprintf(gc.stdout, done+"\n", gc.pos[1], gc.name)
	return nil
}

func (gc *groupCall) remove() error {
	return gc.onUser(gc.g.Remove, "removed %s from %s; the next message starts a new epoch without them")
}

func (gc *groupCall) ban() error {
	if gc.opts.lift {
		return gc.onUser(gc.g.Unban, "lifted the ban of %s in %s")
	}
	id, err := gc.user()
	if err != nil {
		return err
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
	if gc.opts.decline {
		return gc.onUser(gc.g.DeclineJoin, "declined %s's request to join %s")
	}
	return gc.onUser(gc.g.ApproveJoin, "%s is a member of %s now")
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
	return gc.onUser(gc.g.TransferOwnership, "%s owns %s now; you are an admin")
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
