package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/umbra-e2ee/umbra/pkg/kt"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
)

// runKt is `umbra kt` (docs/key-transparency.md). From the client's side: lookup
// prints identities' cards with the proofs the CLI verified and the checkpoint they
// are against; monitor checks the user's own identity once (every other command that
// looks a card up verifies the same proofs, silently). Needing no account: audit and
// checkpoint (kt_log.go).
func runKt(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("kt", args, stderr, "lookup", "monitor", "audit", "checkpoint")
	if err != nil {
		return err
	}
	if sub == "audit" || sub == "checkpoint" {
		return runKtLog(ctx, sub, args, stdout, stderr)
	}
	fs := newFlagSet("kt "+sub, stderr)
	var f clientFlags
	f.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if sub == "lookup" && fs.NArg() == 0 {
		return usagef(stderr, "usage: umbra kt lookup <name or identity>...")
	}
	c, s, err := f.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if sub == "monitor" {
		return ktMonitor(ctx, c, s, stdout)
	}
	ids, err := f.resolve(ctx, fs.Args())
	if err != nil {
		return err
	}
	kept, err := c.KeptCheckpoint()
	if err != nil {
		return err
	}
	proved, err := c.LookupCards(ctx, ids...)
	if err != nil {
		return explainTransparency(err)
	}
	var cp *sdk.Checkpoint
	for i, id := range ids {
		p := proved[id]
		cp = p.Checkpoint
		printProved(stdout, fs.Arg(i), p)
	}
	printCheckpoint(stdout, cp, kept)
	return nil
}

// printProved prints one verified lookup.
func printProved(w io.Writer, name string, p *sdk.ProvedCard) {
	label := fmt.Sprintf("%s (%s)", name, p.Identity)
	if name == p.Identity {
		label = p.Identity
	}
	mp := p.Proof.GetMapProof()
	mapProof := fmt.Sprintf("map proof: %d levels, %d sibling hashes", mp.GetDepth(), len(mp.GetSiblingHashes())/kt.HashSize)
	switch {
	case p.Value == nil:
		fmt.Fprintf(w, "%s: no card, proved: the map has no entry for this identity (%s)\n", label, mapProof)
	case p.Card == nil:
		fmt.Fprintf(w, "%s: no card, proved: its last card %s was revoked by log entry %d\n  %s; inclusion proof: %d hashes\n",
			label, sdk.Fingerprint(p.Leaf.GetCardId()), p.LeafIndex, mapProof, len(p.Proof.GetInclusionHashes())/kt.HashSize)
	default:
		fmt.Fprintf(w, "%s: card %s, proved by the key transparency log\n", label, p.Card.Fingerprint())
		fmt.Fprintf(w, "  map entry    card published by log entry %d (%s), latest entry %d\n",
			p.Value.GetCardLogIndex(), strings.TrimPrefix(p.Leaf.GetKind().String(), "LOG_EVENT_KIND_"), p.Value.GetLatestLogIndex())
		fmt.Fprintf(w, "  proofs       %s; inclusion proof of entry %d: %d hashes\n", mapProof, p.LeafIndex, len(p.Proof.GetInclusionHashes())/kt.HashSize)
		fmt.Fprintf(w, "  card id      %s\n", base64.RawURLEncoding.EncodeToString(p.Card.ID))
	}
}

// printCheckpoint prints the checkpoint lookups were verified against, and whether it
// extends the one the CLI kept before.
func printCheckpoint(w io.Writer, cp, kept *sdk.Checkpoint) {
	if cp == nil {
		return
	}
	fmt.Fprintf(w, "checkpoint of %s: %d entries, signed by its log key\n", cp.Origin, cp.Size)
	fmt.Fprintf(w, "  log root     %s\n  map root     %s\n", base64.StdEncoding.EncodeToString(cp.LogRoot[:]), base64.StdEncoding.EncodeToString(cp.MapRoot[:]))
	switch {
	case kept == nil:
		fmt.Fprintln(w, "  the first checkpoint this client saw: kept, and every later one must extend it")
	case kept.Size == cp.Size:
		fmt.Fprintln(w, "  the checkpoint this client kept")
	case kept.Size < cp.Size:
		fmt.Fprintf(w, "  consistent with the checkpoint of %d entries this client kept (consistency proof verified); kept in its place\n", kept.Size)
	default:
		fmt.Fprintf(w, "  a prefix of the checkpoint of %d entries this client kept (consistency proof verified)\n", kept.Size)
	}
}

// ktMonitor checks the user's own identity in the log once.
func ktMonitor(ctx context.Context, c *sdk.Client, s *session, w io.Writer) error {
	kept, err := c.KeptCheckpoint()
	if err != nil {
		return err
	}
	report, err := c.Monitor(ctx)
	if report == nil {
		return explainTransparency(err)
	}
	p := report.Lookup
	if len(report.Alerts) == 0 {
		fmt.Fprintf(w, "%s (%s): the key transparency log shows only what this device knows of\n", s.Name, s.Identity)
	}
	printProved(w, s.Name, p)
	printCheckpoint(w, p.Checkpoint, kept)
	if len(report.Alerts) == 0 {
		return err
	}
	for _, a := range report.Alerts {
		fmt.Fprintf(w, "ALERT: %s\n", a.Reason)
		fmt.Fprintf(w, "  card         %s\n  log entry    %d\n", sdk.Fingerprint(a.CardID), a.LogIndex)
	}
	return fmt.Errorf("%d key transparency alert(s) for %s: the log shows a card event this device did not make. If you did not make it on another device (a reset, a rotation from keys this device does not hold), someone else published it: every contact encrypts to what the log shows. Restore your keys from a backup that holds the card, or reset them (umbra keys reset), and tell the operator: %w",
		len(report.Alerts), s.Name, err)
}

// explainTransparency adds what to do to a key transparency error.
func explainTransparency(err error) error {
	switch {
	case errors.Is(err, sdk.ErrLogInconsistent):
		return fmt.Errorf("%w\nThe server's key transparency log does not extend the one this client saw before: it was rewritten, or this client is shown a different log than others (a split view). Nothing was encrypted or accepted. Keep %s as evidence and tell the operator", err, "the key transparency state file (<keystore>.kt)")
	case errors.Is(err, sdk.ErrUnknownLogKey):
		return fmt.Errorf("%w\nNothing was encrypted or accepted. If the operator changed the log key, check the new one over a channel you trust (umbra card log-key) and pass it with --log-key", err)
	case errors.Is(err, sdk.ErrUnprovedCard):
		return fmt.Errorf("%w\nThe server served a card its key transparency log does not prove, so nothing was encrypted or accepted", err)
	case errors.Is(err, sdk.ErrNotYetInLog):
		return fmt.Errorf("%w\nNothing was encrypted; try again in a moment", err)
	}
	return err
}
