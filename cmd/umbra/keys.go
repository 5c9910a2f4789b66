package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/sdk"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// runLogin gets a token for a user with the app's API key and makes that user the
// current profile: what an app backend does for its signed-in user, for local use.
func runLogin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newClientFlagSet("login", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef(stderr, "usage: umbra login <name> [flags]   (name: the app's own user id, e.g. alice)")
	}
	name := fs.Arg(0)
	f.user = name
	dir, err := f.profileDir()
	if err != nil {
		return err
	}
	resp, err := f.appResolve(ctx, &identityv1.ResolveIdentitiesRequest{Uids: []string{name}})
	if err != nil {
		return err
	}
	identity := resp.GetUsers()[name]
	tok, exp, err := f.issue(ctx, identity)
	if err != nil {
		return err
	}
	if err := f.saveSession(dir, &session{Name: name, Identity: identity, AccessToken: tok, ExpiresAt: exp}); err != nil {
		return err
	}
	if err := writeFile0600(filepath.Join(f.home, "current"), []byte(name+"\n")); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "logged in as %s (%s) until %s\n", name, identity, exp.Local().Format(time.Kitchen))
	return nil
}

func printCard(w io.Writer, c *sdk.Card) {
	fmt.Fprintf(w, "card %s\n  identity     %s\n  fingerprint  %s\n  suite        %s\n  status       %s\n  published    %s\n",
		base64.RawURLEncoding.EncodeToString(c.ID), c.Identity, c.Fingerprint(), c.Suite, c.Status, c.PublishedAt.Local().Format(time.RFC3339))
	if c.KeyReset {
		fmt.Fprintf(w, "  reset        published under a reset grant from the app backend: no earlier key vouches for it (a key change)\n")
	}
	if len(c.PreviousCardID) > 0 {
		endorsed := "endorsed by the previous key, verified here"
		switch {
		case c.Endorsed:
		case c.Endorsement != nil:
			endorsed = "its endorsement does NOT verify with the previous key: a key change"
		default:
			endorsed = "NOT endorsed: the key changed without the old key vouching for it"
		}
		fmt.Fprintf(w, "  replaces     %s (%s)\n", base64.RawURLEncoding.EncodeToString(c.PreviousCardID), endorsed)
	}
	if !c.SupersededAt.IsZero() {
		fmt.Fprintf(w, "  superseded   %s\n", c.SupersededAt.Local().Format(time.RFC3339))
	}
	if !c.RevokedAt.IsZero() {
		fmt.Fprintf(w, "  revoked      %s\n", c.RevokedAt.Local().Format(time.RFC3339))
	}
}

// resetHint is added to errors that a reset would get past.
const resetHint = "if every key of this user is lost, umbra keys reset publishes new ones with a reset grant from the app backend (--grant, or UMBRA_API_KEY in development)"

// withResetHint explains what to do when publishing needs a reset grant.
func withResetHint(err error) error {
	if errors.Is(err, sdk.ErrResetGrantRequired) || errors.Is(err, sdk.ErrAlreadyRegistered) {
		return fmt.Errorf("%w\n%s", err, resetHint)
	}
	return err
}

// runKeys manages the current profile's keys: init (generate and publish: register),
// show, rotate, and reset (new keys under a reset grant, after every key was lost).
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("keys", args, stderr, "init", "show", "rotate", "reset")
	if err != nil {
		return err
	}
	fs, f := newClientFlagSet("keys "+sub, stderr)
	var grant string
	if sub == "reset" {
		fs.StringVar(&grant, "grant", "", "the reset grant the app backend issued for this user (IssueResetGrant); without it, the CLI asks for one with the API key (development)")
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	c, s, err := f.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	switch sub {
	case "init":
		card, err := c.Register(ctx)
		if err != nil {
			return withResetHint(err)
		}
		fmt.Fprintf(stdout, "keys created for %s and their card published\n", s.Name)
		printCard(stdout, card)
	case "reset":
		if grant == "" {
			if grant, err = f.resetGrant(ctx, s.Identity); err != nil {
				return fmt.Errorf("a reset needs a grant from the app backend: pass --grant (%w)", err)
			}
		}
		had := c.HasPrivateKey()
		card, err := c.ResetKeys(ctx, grant)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "keys reset for %s: new keys, and a card published under the reset grant; the card that was active, if any, is revoked\n", s.Name)
		if had {
			fmt.Fprintln(stdout, "the older private keys stay in this keystore for old messages")
		}
		fmt.Fprintln(stdout, "contacts see a key change; back the new keys up again (umbra backup create)")
		printCard(stdout, card)
	case "rotate":
		card, err := c.RotateKeys(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "keys rotated for %s; the old private key is kept for old messages\n", s.Name)
		printCard(stdout, card)
	case "show":
		if !c.HasPrivateKey() {
			return fmt.Errorf("%s has no keys here: run umbra keys init", s.Name)
		}
		cards, err := c.FindCards(ctx, s.Identity)
		if err != nil {
			return err
		}
		card, ok := cards[s.Identity]
		if !ok {
			return fmt.Errorf("%s has keys here but no active card", s.Name)
		}
		fmt.Fprintf(stdout, "%s (%s)\n", s.Name, s.Identity)
		printCard(stdout, card)
	}
	return nil
}

// runCard works with the directory: publish (a first card for fresh keys; after a
// revocation a new card is a reset: umbra keys reset), revoke, find, history.
func runCard(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("card", args, stderr, "publish", "revoke", "find", "history", "service-key", "log-key")
	if err != nil {
		return err
	}
	fs, f := newClientFlagSet("card "+sub, stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if sub == "publish" || sub == "revoke" {
		return ownCard(ctx, sub, f, stdout)
	}
	if sub == "service-key" || sub == "log-key" {
		c, _, err := f.client(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		if sub == "log-key" {
			return printLogKey(ctx, c, stdout)
		}
		return printServiceKeys(ctx, c, stdout)
	}
	if fs.NArg() == 0 {
		return usagef(stderr, "usage: umbra card %s <name or identity>...", sub)
	}
	c, _, ids, err := f.clientFor(ctx, fs.Args())
	if err != nil {
		return err
	}
	defer c.Close()
	switch sub {
	case "find":
		cards, err := c.FindCards(ctx, ids...)
		if err != nil {
			return err
		}
		for i, id := range ids {
			if card, ok := cards[id]; ok {
				if card.Endorsement != nil {
					verified, err := c.VerifyEndorsement(ctx, card)
					switch {
					case err == nil:
						card = verified
					case !errors.Is(err, sdk.ErrBadEndorsement):
						return err
					}
				}
				printCard(stdout, card)
			} else {
				fmt.Fprintf(stdout, "%s (%s): no active card\n", fs.Arg(i), id)
			}
		}
	case "history":
		for i, id := range ids {
			cards, err := c.CardHistory(ctx, id)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s (%s): %d cards, newest first\n", fs.Arg(i), id, len(cards))
			for _, card := range cards {
				printCard(stdout, card)
			}
		}
	}
	return nil
}

// ownCard publishes or revokes the current profile's card.
func ownCard(ctx context.Context, sub string, f *clientFlags, stdout io.Writer) error {
	c, s, err := f.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if sub == "revoke" {
		if err := c.RevokeCard(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s's card is revoked; its keys stay here for old messages (umbra keys reset starts afresh, with a reset grant from the app backend)\n", s.Name)
		return nil
	}
	card, err := c.PublishCard(ctx)
	if err != nil {
		return withResetHint(err)
	}
	fmt.Fprintf(stdout, "card published for %s\n", s.Name)
	printCard(stdout, card)
	return nil
}

// readInput returns the arguments joined by spaces, or standard input when there are
// none.
func readInput(args []string) ([]byte, error) {
	if len(args) > 0 {
		return []byte(strings.Join(args, " ")), nil
	}
	return io.ReadAll(bufio.NewReader(os.Stdin))
}

// runEncrypt encrypts a message for recipients and writes it in base64 (or raw with
// --out).
func runEncrypt(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newClientFlagSet("encrypt", stderr)
	var to listFlag
	fs.Var(&to, "to", "recipients: names or identities, comma-separated")
	out := fs.String("out", "", "write the raw envelope to this file instead of base64 to standard output")
	if err := parse(fs, args); err != nil {
		return err
	}
	if len(to) == 0 {
		return usagef(stderr, "usage: umbra encrypt --to bob[,carol] [message]   (message from standard input if absent)")
	}
	c, _, ids, err := f.clientFor(ctx, to)
	if err != nil {
		return err
	}
	defer c.Close()
	msg, err := readInput(fs.Args())
	if err != nil {
		return err
	}
	env, err := c.Encrypt(ctx, msg, ids...)
	if err != nil {
		return f.explain(err)
	}
	if *out != "" {
		return writeFile0600(*out, env)
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(env))
	return nil
}

// runDecrypt decrypts a message from a sender, given in base64 or raw, from a file or
// standard input.
func runDecrypt(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, f := newClientFlagSet("decrypt", stderr)
	from := fs.String("from", "", "the sender: a name or an identity")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *from == "" || fs.NArg() > 1 {
		return usagef(stderr, "usage: umbra decrypt --from alice [file]   (standard input if no file)")
	}
	var in []byte
	var err error
	if fs.NArg() == 1 {
		in, err = os.ReadFile(fs.Arg(0))
	} else {
		in, err = io.ReadAll(os.Stdin)
	}
	if err != nil {
		return err
	}
	if dec, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(string(in))); derr == nil {
		in = dec
	}
	c, _, ids, err := f.clientFor(ctx, []string{*from})
	if err != nil {
		return err
	}
	defer c.Close()
	plain, err := c.Decrypt(ctx, in, ids[0])
	if err != nil {
		return f.explain(err)
	}
	_, err = stdout.Write(plain)
	if err == nil && len(plain) > 0 && plain[len(plain)-1] != '\n' {
		fmt.Fprintln(stdout)
	}
	return err
}
