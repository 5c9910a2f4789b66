package main

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/ident"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	groupv1 "github.com/umbra-e2ee/umbra/proto/umbra/group/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
	messagingv1 "github.com/umbra-e2ee/umbra/proto/umbra/messaging/v1"
)

// runDemo tells Umbra's story against a running server: users register, exchange
// encrypted messages, form a group, remove a member so the group key rotates, and
// restore their keys on a new device. Beside each step it prints what the server
// stored and what the clients read.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newClientFlagSet("demo", stderr)
	keep := fs.Bool("keep", false, "keep the demo's keystores (printed at the end) instead of deleting them")
	if err := parse(fs, args); err != nil {
		return err
	}
	if f.apiKey == "" {
		return fmt.Errorf("umbra demo needs the app's API key to act for its users: set UMBRA_API_KEY (umbra dev prints it) or pass --api-key")
	}
	home, err := os.MkdirTemp("", "umbra-demo-")
	if err != nil {
		return err
	}
	if *keep {
		defer fmt.Fprintf(stdout, "\nkeystores kept in %s\n", home)
	} else {
		defer os.RemoveAll(home)
	}
	d := &demo{f: f, home: home, out: stdout, run: demoRunID()}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return d.story(ctx)
}

// The messages and passwords of the story.
const (
	demoHello         = "hello bob, only you can read this"
	demoAfterRotation = "sent with my new key"
	demoWelcome       = "welcome to the team"
	demoAfterRemoval  = "carol cannot read this"
	demoPassword      = "correct horse battery staple"
	demoWrongPassword = "not my password"
)

// demo holds one run of the story.
type demo struct {
	f     *clientFlags
	home  string
	out   io.Writer
	run   string // makes this run's user names unique on a shared server
	step  int
	users map[string]*demoUser
}

// demoUser is one device of one user.
type demoUser struct {
	name     string
	identity string
	c        *sdk.Client
}

func demoRunID() string {
	b := make([]byte, 5)
	rand.Read(b)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

func (d *demo) title(format string, a ...any) {
	d.step++
	fmt.Fprintf(d.out, "\n%d. %s\n", d.step, fmt.Sprintf(format, a...))
}

// table prints rows as "  server stored | ..." lines, aligned.
func (d *demo) table(rows ...[2]string) {
	tw := tabwriter.NewWriter(d.out, 0, 2, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "   %s\t%s\n", r[0], r[1])
	}
	tw.Flush()
}

// device opens a device of user name with its own, empty keystore folder dev.
func (d *demo) device(ctx context.Context, name, dev string) (*demoUser, error) {
	ids, err := d.f.resolve(ctx, []string{"demo-" + d.run + "-" + name})
	if err != nil {
		return nil, err
	}
	identity := ids[0]
	c, err := sdk.New(ctx, sdk.Config{
		Addr:     d.f.server,
		TLS:      d.f.tls,
		Insecure: d.f.insecure,
		Token: func(ctx context.Context) (string, error) {
			tok, _, err := d.f.issue(ctx, identity)
			return tok, err
		},
		KeystorePath: filepath.Join(d.home, name+"-"+dev, "keystore"),
		NoPassphrase: true,
	})
	if err != nil {
		return nil, err
	}
	return &demoUser{name: name, identity: identity, c: c}, nil
}

// preview shows the first bytes of a ciphertext.
func preview(b []byte) string {
	const n = 24
	if len(b) <= n {
		return hex.EncodeToString(b)
	}
	return hex.EncodeToString(b[:n]) + "…"
}

func (d *demo) story(ctx context.Context) error {
	fmt.Fprintf(d.out, "Umbra demo against %s (run %s). The server only ever sees what is printed beside \"server stored\".\n", d.f.server, d.run)

	d.title("alice, bob and carol register: each device makes its keys and publishes a card")
	users := map[string]*demoUser{}
	for _, name := range []string{"alice", "bob", "carol"} {
		u, err := d.device(ctx, name, "phone")
		if err != nil {
			return err
		}
		defer u.c.Close()
		card, err := u.c.Register(ctx)
		if err != nil {
			return fmt.Errorf("register %s: %w", name, err)
		}
		users[name] = u
		d.table([2]string{name + ":", fmt.Sprintf("identity %s, card %s (%s), fingerprint %s", u.identity, hex.EncodeToString(card.ID)[:16]+"…", card.Suite, card.Fingerprint())})
	}
	alice, bob := users["alice"], users["bob"]

	d.title("alice sends bob an encrypted message")
	const hello = demoHello
	sent, err := alice.c.SendTo(ctx, bob.identity, []byte(hello))
	if err != nil {
		return fmt.Errorf("alice sends: %w", err)
	}
	m, err := d.lastMessage(ctx, bob, sent.GetConversationId())
	if err != nil {
		return err
	}
	plain, err := bob.c.OpenMessage(ctx, m)
	if err != nil {
		return fmt.Errorf("bob decrypts: %w", err)
	}
	d.table(
		[2]string{"alice wrote:", fmt.Sprintf("%q (%d bytes)", hello, len(hello))},
		[2]string{"server stored:", fmt.Sprintf("conversation %s, message %d, %s, %d bytes: %s", m.GetConversationId(), m.GetSequence(), m.GetHeader().GetKind(), len(m.GetEnvelope()), preview(m.GetEnvelope()))},
		[2]string{"bob read:", fmt.Sprintf("%q", plain)},
	)
	if string(plain) != hello {
		return fmt.Errorf("bob read %q; alice wrote %q", plain, hello)
	}

	d.title("alice rotates her keys; her old message stays readable")
	card, err := alice.c.RotateKeys(ctx)
	if err != nil {
		return fmt.Errorf("alice rotates: %w", err)
	}
	const after = demoAfterRotation
	if _, err := alice.c.SendTo(ctx, bob.identity, []byte(after)); err != nil {
		return fmt.Errorf("alice sends: %w", err)
	}
	d.table([2]string{"alice:", fmt.Sprintf("new card %s; the old one is superseded and kept in her keystore", hex.EncodeToString(card.ID)[:16]+"…")})
	if err := d.readAll(ctx, bob, sent.GetConversationId(), hello, after); err != nil {
		return err
	}

	groupID, err := d.groupStory(ctx, users)
	if err != nil {
		return err
	}
	if err := d.backupStory(ctx, bob, sent.GetConversationId(), groupID); err != nil {
		return err
	}

	fmt.Fprintln(d.out, "\nThe server stored only ciphertext and public keys; every plaintext above was read on a device.")
	return nil
}

// groupStory: alice forms a group, removes carol, and the key rotates before the next
// message, which carol cannot read.
func (d *demo) groupStory(ctx context.Context, users map[string]*demoUser) (string, error) {
	alice, bob, carol := users["alice"], users["bob"], users["carol"]
	d.users = users
	d.title("alice forms a group with bob and carol; her first message commits epoch 1")
	team := "demo-" + d.run + "-team"
	resp, err := d.f.appResolve(ctx, &identityv1.ResolveIdentitiesRequest{Guids: []string{team}})
	if err != nil {
		return "", fmt.Errorf("resolve the group: %w", err)
	}
	groupID := resp.GetGroups()[team]
	g, _, err := alice.c.CreateGroup(ctx, groupID, sdk.CreateGroupOptions{Members: []string{bob.identity, carol.identity}})
	if err != nil {
		return "", fmt.Errorf("alice creates the group: %w", err)
	}
	const first = demoWelcome
	if _, err := g.Send(ctx, []byte(first)); err != nil {
		return "", fmt.Errorf("alice sends to the group: %w", err)
	}
	if err := d.epochState(ctx, alice, groupID, "after the first message"); err != nil {
		return "", err
	}
	for _, u := range []*demoUser{bob, carol} {
		if err := d.readAll(ctx, u, groupID, first); err != nil {
			return "", err
		}
	}

	d.title("alice removes carol: the server requires a new epoch before the next encrypted message")
	if err := g.Remove(ctx, carol.identity); err != nil {
		return "", fmt.Errorf("alice removes carol: %w", err)
	}
	if err := d.epochState(ctx, alice, groupID, "after the removal"); err != nil {
		return "", err
	}
	const second = demoAfterRemoval
	if _, err := g.Send(ctx, []byte(second)); err != nil {
		return "", fmt.Errorf("alice sends to the group: %w", err)
	}
	if err := d.epochState(ctx, alice, groupID, "after alice's SDK rotated and resent"); err != nil {
		return "", err
	}
	if err := d.readAll(ctx, bob, groupID, first, second); err != nil {
		return "", err
	}
	_, err = carol.c.History(ctx, &messagingv1.HistoryRequest{ConversationId: groupID})
	if err == nil {
		return "", fmt.Errorf("carol still reads the group's history after her removal")
	}
	d.table([2]string{"carol:", fmt.Sprintf("refused: %v", status.Convert(err).Message())})
	return groupID, nil
}

// epochState prints what the group service holds about the group's key, as u sees it.
func (d *demo) epochState(ctx context.Context, u *demoUser, groupID, when string) error {
	st, err := groupv1.NewGroupServiceClient(u.c.Conn()).GetEpochState(ctx, &groupv1.GetEpochStateRequest{GroupId: groupID})
	if err != nil {
		return fmt.Errorf("epoch state: %w", err)
	}
	commit := "no commit yet"
	if c := st.GetCommit(); c != nil {
		commit = fmt.Sprintf("epoch %d committed by %s, a signed commit of %d bytes (the key itself: never)", c.GetEpoch(), demoName(c.GetCommittedBy(), d.users), len(c.GetCommit().GetContent()))
	}
	d.table([2]string{"server stored:", fmt.Sprintf("%s: epoch %d, %d members, rotation required: %v; %s",
		when, st.GetEpoch(), st.GetMemberCount(), st.GetRotationRequired(), commit)})
	return nil
}

// demoName returns the demo's name for an identity.
func demoName(identity string, users map[string]*demoUser) string {
	for name, u := range users {
		if u.identity == identity {
			return name
		}
	}
	return identity
}

// backupStory: bob backs his keys up under a password; a new device with an empty
// keystore restores them and reads the history.
func (d *demo) backupStory(ctx context.Context, bob *demoUser, conv, groupID string) error {
	const password = demoPassword
	d.title("bob backs his keys up under a password")
	info, err := bob.c.BackupPrivateKey(ctx, []byte(password))
	if err != nil {
		return fmt.Errorf("bob backs up: %w", err)
	}
	d.table(
		[2]string{"server stored:", fmt.Sprintf("backup version %d: %d bytes of ciphertext, Argon2id t=%d m=%d MiB p=%d, %d attempts; the password and its OPRF output: never",
			info.GetVersion(), info.GetCiphertextSize(), info.GetKdf().GetTime(), info.GetKdf().GetMemoryKib()/1024, info.GetKdf().GetThreads(), info.GetRemainingAttempts())},
	)

	d.title("bob's new laptop starts empty, restores his keys with the password, and reads his history")
	laptop, err := d.device(ctx, "bob", "laptop")
	if err != nil {
		return err
	}
	defer laptop.c.Close()
	if err := laptop.c.RestorePrivateKey(ctx, []byte(demoWrongPassword)); err != nil {
		d.table([2]string{"laptop:", fmt.Sprintf("a wrong password: %v", err)})
	} else {
		return fmt.Errorf("a wrong password restored bob's keys")
	}
	if err := laptop.c.RestorePrivateKey(ctx, []byte(password)); err != nil {
		return fmt.Errorf("bob's laptop restores: %w", err)
	}
	laptop.name = "bob's laptop"
	if err := d.readAll(ctx, laptop, conv, demoHello, demoAfterRotation); err != nil {
		return err
	}
	return d.readAll(ctx, laptop, groupID, demoWelcome, demoAfterRemoval)
}

// lastMessage fetches the newest message of a conversation as u.
func (d *demo) lastMessage(ctx context.Context, u *demoUser, conv string) (*messagingv1.Message, error) {
	page, err := u.c.History(ctx, &messagingv1.HistoryRequest{ConversationId: conv, PageSize: 1})
	if err != nil {
		return nil, fmt.Errorf("%s reads history: %w", u.name, err)
	}
	if len(page.GetMessages()) == 0 {
		return nil, fmt.Errorf("%s sees no message in %s", u.name, conv)
	}
	return page.GetMessages()[0], nil
}

// readAll has u read a conversation from its start, and checks it holds want in order.
// A group conversation's lines also say each message's epoch.
func (d *demo) readAll(ctx context.Context, u *demoUser, conv string, want ...string) error {
	zero := uint64(0)
	page, err := u.c.History(ctx, &messagingv1.HistoryRequest{ConversationId: conv, AfterSequence: &zero})
	if err != nil {
		return fmt.Errorf("%s reads %s: %w", u.name, conv, err)
	}
	var got []string
	for _, m := range page.GetMessages() {
		plain, err := u.c.OpenMessage(ctx, m)
		if err != nil {
			return fmt.Errorf("%s decrypts message %d of %s: %w", u.name, m.GetSequence(), conv, err)
		}
		got = append(got, string(plain))
		which := fmt.Sprintf("message %d", m.GetSequence())
		if ident.ValidGroup("conversation", conv) == nil {
			which = fmt.Sprintf("group message %d, epoch %d", m.GetSequence(), m.GetHeader().GetEpoch())
		}
		d.table([2]string{u.name + " read:", fmt.Sprintf("%s (%d bytes stored): %q", which, len(m.GetEnvelope()), plain)})
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		return fmt.Errorf("%s read %q in %s; want %q", u.name, got, conv, want)
	}
	return nil
}
