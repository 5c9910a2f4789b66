package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/umbra-e2ee/umbra/internal/ktaudit"
	"github.com/umbra-e2ee/umbra/internal/ktlog"
	"github.com/umbra-e2ee/umbra/internal/witness"
	"github.com/umbra-e2ee/umbra/pkg/kt"
	"github.com/umbra-e2ee/umbra/pkg/sdk"
)

// runKtLog runs `umbra kt audit` and `umbra kt checkpoint`, key transparency's tools
// that need no account: audit replays the log and checks every checkpoint
// (internal/ktaudit); checkpoint prints the latest checkpoint, verified, and cosigned
// by the witnesses asked.
func runKtLog(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("kt "+sub, stderr)
	var lc ktlog.Config
	fs.StringVar(&lc.Addr, "server", "127.0.0.1:9090", "the card service's gRPC address, or its REST gateway's URL (http://host:8080)")
	fs.StringVar(&lc.TLS.CAFile, "tls-ca", "", "CA that signs the server's certificate (enables TLS)")
	fs.BoolVar(&lc.Insecure, "insecure", false, "allow plaintext beyond loopback")
	var logKeys, files, states, witnesses listFlag
	fs.Var(&logKeys, "log-key", "the log's verifier keys, comma-separated (umbra card log-key prints them; across a log key rotation, the old and the new); default: the one the server states")
	var quorum int
	if sub == "audit" {
		fs.Var(&files, "checkpoint", "comma-separated files of signed checkpoints to check too (a client's, a witness's)")
		fs.Var(&states, "witness-state", "comma-separated witness state files (state.json) whose cosigned checkpoint to check too")
	} else {
		fs.Var(&witnesses, "witness", "comma-separated witnesses to require, each <verifier key>@<URL> (umbra witness keygen prints the key)")
		fs.IntVar(&quorum, "quorum", 0, "how many of the witnesses must have cosigned (0: all)")
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := ktlog.Dial(lc)
	if err != nil {
		return err
	}
	defer log.Close()
	if len(logKeys) == 0 {
		_, vkey, err := log.LogKey(ctx)
		if err != nil {
			return err
		}
		logKeys = listFlag{vkey}
		fmt.Fprintf(stdout, "log key %s, as the server states it (pass --log-key to check against the one you trust)\n", vkey)
	}
	if sub == "checkpoint" {
		return ktCheckpoint(ctx, log, logKeys, witnesses, quorum, stdout)
	}
	cfg := ktaudit.Config{LogKeys: logKeys}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		cfg.Checkpoints = append(cfg.Checkpoints, ktaudit.Source{Name: f, Signed: b})
	}
	for _, f := range states {
		st, err := witness.ReadState(f)
		if err != nil {
			return err
		}
		cfg.Checkpoints = append(cfg.Checkpoints, ktaudit.Source{Name: "witness state " + f, Signed: []byte(st.Cosigned)})
	}
	res, err := ktaudit.Audit(ctx, log, cfg)
	if err != nil {
		return fmt.Errorf("AUDIT FAILED: %w", err)
	}
	fmt.Fprintf(stdout, "replayed the log's %d entries and recomputed its map\n", res.Entries)
	for _, c := range res.Checked {
		fmt.Fprintf(stdout, "checkpoint of %d entries (%s): log root and map root match\n", c.Size, c.Source)
	}
	fmt.Fprintf(stdout, "audit passed: %d checkpoints are the log's entries and the map they make\n", len(res.Checked))
	return nil
}

// ktCheckpoint prints the latest checkpoint, verified against the log key and, with
// witnesses, cosigned by the quorum of them (the SDK's CheckWitnesses).
func ktCheckpoint(ctx context.Context, log ktlog.Log, logKeys []string, witnessArgs []string, quorum int, stdout io.Writer) error {
	var ws []sdk.Witness
	for _, a := range witnessArgs {
		w, err := sdk.ParseWitness(a)
		if err != nil {
			return fmt.Errorf("--witness: %w", err)
		}
		ws = append(ws, w)
	}
	var signed []byte
	var cp *kt.Checkpoint
	// A checkpoint the witnesses have moved past is not cosigned any more (a
	// cosignature says "the largest I have seen"): one more try with the next.
	for attempt := 0; ; attempt++ {
		latest, err := log.Checkpoint(ctx)
		if err != nil {
			return err
		}
		if cp, err = kt.OpenCheckpoint(latest, logKeys...); err != nil {
			return fmt.Errorf("the latest checkpoint: %w", err)
		}
		signed = latest
		if len(ws) == 0 {
			break
		}
		signed, err = sdk.CheckWitnesses(ctx, nil, ws, quorum, logKeys, latest, time.Now())
		if err == nil {
			break
		}
		if attempt > 0 || !errors.Is(err, kt.ErrNotWitnessed) {
			return err
		}
	}
	fmt.Fprintf(stdout, "checkpoint of %d entries, signed by the log key of %s\n", cp.Size, cp.Origin)
	if len(ws) > 0 {
		keys := make([]string, len(ws))
		for i, w := range ws {
			keys[i] = w.Key
		}
		q := quorum
		if q == 0 {
			q = len(ws)
		}
		policy, err := kt.NewWitnessPolicy(q, keys...)
		if err != nil {
			return err
		}
		valid, err := policy.Check(signed, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "cosigned by %d of the %d witnesses required:\n", len(valid), q)
		for _, c := range valid {
			fmt.Fprintf(stdout, "  %s at %s\n", c.Witness.Name(), c.Time.Format(time.RFC3339))
		}
	}
	_, err := stdout.Write(signed)
	return err
}
