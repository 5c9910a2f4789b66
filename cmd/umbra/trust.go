package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/kt"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// runTrust shows and changes what the current profile trusts of a contact's keys
// (docs/wire-format.md, 5.4 and 5.5): show (the safety number, the pinned keys and any
// pending key change), accept (a pending key change, after comparing safety numbers)
// and verify (mark the contact verified, after comparing the safety number).
func runTrust(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("trust", args, stderr, "show", "accept", "verify")
	if err != nil {
		return err
	}
	fs, f := newClientFlagSet("trust "+sub, stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 1 || (sub != "verify" && fs.NArg() != 1) {
		return usagef(stderr, "usage: umbra trust %s <name or identity>%s", sub, map[bool]string{true: " [safety number]"}[sub == "verify"])
	}
	c, s, ids, err := f.clientFor(ctx, fs.Args()[:1])
	if err != nil {
		return err
	}
	defer c.Close()
	name, id := fs.Arg(0), ids[0]
	switch sub {
	case "show":
		ct, err := c.Contact(ctx, id)
		if err != nil {
			return err
		}
		printContact(stdout, s.Name, name, ct)
	case "accept":
		changed, err := c.AcceptKeyChange(ctx, id)
		if errors.Is(err, sdk.ErrNoKeyChange) {
			return fmt.Errorf("%s's key has not changed: nothing to accept", name)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "accepted %s's new key\n  was          %s\n  now          %s\n  why it broke %s\n", name, changed.OldFingerprint, changed.NewFingerprint, changed.Reason.Explain())
		if changed.Verified {
			fmt.Fprintf(stdout, "%s is no longer verified: compare the safety number again, then umbra trust verify %s\n", name, name)
		}
	case "verify":
		number := strings.Join(fs.Args()[1:], "")
		if err := c.VerifyContact(ctx, id, number); err != nil {
			return f.explain(err)
		}
		fmt.Fprintf(stdout, "%s is verified: a later change of their key that their old key does not vouch for is refused until you accept it\n", name)
	}
	return nil
}

// printContact shows what me trusts of the contact name.
func printContact(w io.Writer, me, name string, ct *sdk.ContactTrust) {
	head := ct.Chain[len(ct.Chain)-1]
	fmt.Fprintf(w, "%s (%s)\n", name, ct.Identity)
	fmt.Fprintf(w, "  safety number  %s\n", ct.SafetyNumber)
	fmt.Fprintf(w, "  your key       %s\n", sdk.Fingerprint(ct.MyCardID))
	fmt.Fprintf(w, "  their key      %s (%s, %s)\n", head.Fingerprint, how(head.How), head.At.Local().Format(time.RFC3339))
	if ct.Verified {
		fmt.Fprintf(w, "  verified       yes, %s\n", ct.VerifiedAt.Local().Format(time.RFC3339))
	} else {
		fmt.Fprintf(w, "  verified       no: compare the safety number with %s (in person, or on a call), then umbra trust verify %s\n", name, name)
	}
	if len(ct.Chain) > 1 {
		fmt.Fprintf(w, "  earlier keys  ")
		for i := len(ct.Chain) - 2; i >= 0; i-- {
			fmt.Fprintf(w, " %s (%s)", ct.Chain[i].Fingerprint, how(ct.Chain[i].How))
		}
		fmt.Fprintln(w)
	}
	if p := ct.Pending; p != nil {
		fmt.Fprintf(w, "KEY CHANGE: %s's key changed (seen %s): %s\n", name, p.At.Local().Format(time.RFC3339), p.Reason.Explain())
		if p.Detail != "" {
			fmt.Fprintf(w, "  what failed        %s\n", p.Detail)
		}
		fmt.Fprintf(w, "  new key            %s\n", p.Fingerprint)
		fmt.Fprintf(w, "  new safety number  %s\n", p.SafetyNumber)
		fmt.Fprintf(w, "Nothing is encrypted to the new key until you accept it. Ask %s to run umbra trust show %s and read you their safety number; if it is the new safety number above, run umbra trust accept %s. If not, someone else holds the new key.\n", name, me, name)
	}
}

func how(h string) string {
	switch h {
	case "first-use":
		return "trusted on first use"
	case "endorsed":
		return "endorsed by the key before it"
	case "accepted":
		return "accepted by you"
	case "warned":
		return "taken after a warning"
	}
	return h
}

// explain turns a key change into what the user should do about it.
func (f *clientFlags) explain(err error) error {
	var kc *sdk.KeyChangedError
	if !errors.As(err, &kc) {
		return explainTransparency(err)
	}
	name := f.typed[kc.Identity]
	if name == "" {
		name = f.profileName(kc.Identity)
	}
	if name == "" {
		name = kc.Identity
	}
	me := f.user
	msg := fmt.Sprintf("%s's key changed, so nothing was encrypted or accepted: %s\n  pinned key  %s\n  new key     %s", name, kc.Reason.Explain(), kc.OldFingerprint, kc.NewFingerprint)
	if kc.Err != nil {
		msg += "\n  what failed " + kc.Err.Error()
	}
	if kc.Verified {
		msg += fmt.Sprintf("\nYou had verified %s's safety number.", name)
	}
	msg += fmt.Sprintf("\nCompare safety numbers with %s: run umbra trust show %s, and ask %s to run umbra trust show %s. If they match, accept the new key: umbra trust accept %s", name, name, name, me, name)
	return errors.New(msg)
}

// parseServiceKeys reads --service-key: key_id:base64 public key, comma-separated.
func parseServiceKeys(v string) ([]sdk.ServiceKeyPin, error) {
	var out []sdk.ServiceKeyPin
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		id, b64, ok := strings.Cut(item, ":")
		if !ok || id == "" {
			return nil, fmt.Errorf("--service-key %q: want key_id:base64-public-key (umbra card service-key prints them)", item)
		}
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(key) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("--service-key %q: the public key must be 32 bytes of standard base64", item)
		}
		out = append(out, sdk.ServiceKeyPin{KeyID: id, PublicKey: key})
	}
	return out, nil
}

// printServiceKeys prints the card service's keys as --service-key takes them.
func printServiceKeys(ctx context.Context, c *sdk.Client, w io.Writer) error {
	resp, err := cardv1.NewCardServiceClient(c.Conn()).GetServiceKey(ctx, &cardv1.GetServiceKeyRequest{})
	if err != nil {
		return err
	}
	var pins []string
	for _, k := range resp.GetKeys() {
		pins = append(pins, k.GetKeyId()+":"+base64.StdEncoding.EncodeToString(k.GetPublicKey()))
	}
	fmt.Fprintf(w, "the card service's keys, oldest first, as --service-key (or UMBRA_SERVICE_KEY) takes them:\n%s\n", strings.Join(pins, ","))
	fmt.Fprintln(w, "check them over a channel you trust (the operator's published value), not only this server's word")
	return nil
}

// printLogKey prints the key transparency log keys that sign, as signed-note verifier
// keys (two during a log key rotation), the retired ones, and the latest checkpoint
// they signed.
func printLogKey(ctx context.Context, c *sdk.Client, w io.Writer) error {
	cards := cardv1.NewCardServiceClient(c.Conn())
	key, err := cards.GetLogKey(ctx, &cardv1.GetLogKeyRequest{})
	if err != nil {
		return err
	}
	signing, retired := []string{}, []string{}
	for _, k := range key.GetKeys() {
		if k.GetRetiredAt() == nil {
			signing = append(signing, k.GetVerifierKey())
		} else {
			retired = append(retired, fmt.Sprintf("%s (retired %s)", k.GetVerifierKey(), k.GetRetiredAt().AsTime().Format(time.RFC3339)))
		}
	}
	if len(signing) == 0 { // a server from before log key rotations
		signing = []string{key.GetVerifierKey()}
	}
	if len(signing) == 1 {
		fmt.Fprintf(w, "the key transparency log key (origin %s), as a signed-note verifier key for clients, witnesses and auditors:\n%s\n", key.GetOrigin(), signing[0])
	} else {
		fmt.Fprintf(w, "the key transparency log keys (origin %s): a log key rotation is in progress and each signs every checkpoint; as --log-key takes them:\n%s\n", key.GetOrigin(), strings.Join(signing, ","))
	}
	fmt.Fprintln(w, "check it over a channel you trust (the operator's published value), not only this server's word")
	if len(retired) > 0 {
		fmt.Fprintf(w, "retired log keys, which sign no more checkpoints:\n  %s\n", strings.Join(retired, "\n  "))
	}
	resp, err := cards.GetCheckpoint(ctx, &cardv1.GetCheckpointRequest{})
	if err != nil {
		return err
	}
	cp, err := kt.OpenCheckpoint(resp.GetCheckpoint(), signing...)
	if err != nil {
		return fmt.Errorf("the latest checkpoint: %w", err)
	}
	fmt.Fprintf(w, "latest checkpoint, signed by it: %d entries\n%s", cp.Size, resp.GetCheckpoint())
	return nil
}
