package sdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/kt"
)

// Witness is a witness whose cosignatures a client asks for (`umbra witness`;
// docs/key-transparency.md, "Witnesses").
type Witness struct {
	// Key is the witness's verifier key, as `umbra witness keygen` prints it:
	// "<name>+<key ID>+<base64 key>". It is what the client trusts: the witness is
	// reached over plain HTTP if need be, since a cosignature authenticates itself.
	Key string
	// URL is the witness's HTTP API, "http://127.0.0.1:8091" for example.
	URL string
}

// WitnessTimeout bounds each witness's answer.
const WitnessTimeout = 10 * time.Second

// ParseWitness parses "<verifier key>@<URL>", the form the CLI's --witness takes.
func ParseWitness(s string) (Witness, error) {
	plus := strings.LastIndex(s, "+")
	at := -1
	if plus >= 0 {
		if i := strings.Index(s[plus:], "@"); i >= 0 {
			at = plus + i
		}
	}
	if at < 0 {
		return Witness{}, fmt.Errorf("sdk: witness %q is not <verifier key>@<URL>", s)
	}
	w := Witness{Key: s[:at], URL: s[at+1:]}
	if _, err := kt.ParseWitnessKey(w.Key); err != nil {
		return Witness{}, err
	}
	if !strings.HasPrefix(w.URL, "http://") && !strings.HasPrefix(w.URL, "https://") {
		return Witness{}, fmt.Errorf("sdk: witness URL %q is not http:// or https://", w.URL)
	}
	return w, nil
}

// CheckWitnesses applies the policy "at least quorum of witnesses cosigned this
// checkpoint" (quorum zero: all of them) to checkpoint, a signed checkpoint the caller
// has verified against its log keys logKeys (one, or the old and the new during a log
// key rotation: any of them will do, as for kt.OpenCheckpoint). It submits the checkpoint to every witness
// at once (POST /checkpoint: a witness cosigns it if it is consistent with what the
// witness cosigned before), gathers the cosignatures, and checks them with
// kt.WitnessPolicy. It returns the checkpoint with the cosignatures that were
// gathered, or:
//
//   - a *kt.ForkError (kt.ErrInconsistent) when a witness holds another checkpoint of
//     the same log and size, signed by the log key and cosigned by the witness: the
//     log showed this client a split view, and both checkpoints are the evidence;
//   - a *kt.NotWitnessedError (kt.ErrNotWitnessed) when fewer than quorum valid
//     cosignatures came back, saying why for each witness.
//
// hc may be nil (an http.Client with WitnessTimeout).
func CheckWitnesses(ctx context.Context, hc *http.Client, witnesses []Witness, quorum int, logKeys []string, checkpoint []byte, now time.Time) ([]byte, error) {
	if quorum == 0 {
		quorum = len(witnesses)
	}
	keys := make([]string, len(witnesses))
	for i, w := range witnesses {
		keys[i] = w.Key
	}
	policy, err := kt.NewWitnessPolicy(quorum, keys...)
	if err != nil {
		return nil, err
	}
	cp, err := kt.OpenCheckpoint(checkpoint, logKeys...)
	if err != nil {
		return nil, err
	}
	if hc == nil {
		hc = &http.Client{Timeout: WitnessTimeout}
	}
	answers := make([]witnessAnswer, len(witnesses))
	var wg sync.WaitGroup
	for i, w := range witnesses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = askWitness(ctx, hc, w, checkpoint)
		}()
	}
	wg.Wait()

	var notes [][]byte
	problems := map[string]string{}
	for i, a := range answers {
		w := policy.Witnesses()[i]
		switch {
		case a.err != nil:
			problems[w.Name()] = a.err.Error()
		case a.status == http.StatusOK || a.status == http.StatusConflict:
			if fork := forkEvidence(cp, checkpoint, a.body, w, logKeys); fork != nil {
				return nil, fork
			}
			if a.status == http.StatusOK {
				notes = append(notes, a.body)
			} else {
				problems[w.Name()] = "answered 409 without valid evidence of a fork"
			}
		default:
			problems[w.Name()] = fmt.Sprintf("answered %d: %s", a.status, strings.TrimSpace(string(a.body)))
		}
	}
	merged, _, err := kt.MergeCosignatures(checkpoint, notes...)
	if err != nil {
		return nil, err
	}
	if _, err := policy.Check(merged, now); err != nil {
		if len(problems) == 0 {
			return nil, err
		}
		names := make([]string, 0, len(problems))
		for n := range problems {
			names = append(names, n)
		}
		sort.Strings(names)
		var b strings.Builder
		for _, n := range names {
			fmt.Fprintf(&b, "; %s %s", n, problems[n])
		}
		return nil, fmt.Errorf("%w%s", err, b.String())
	}
	return merged, nil
}

type witnessAnswer struct {
	status int
	body   []byte
	err    error
}

func askWitness(ctx context.Context, hc *http.Client, w Witness, checkpoint []byte) witnessAnswer {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(w.URL, "/")+"/checkpoint", bytes.NewReader(checkpoint))
	if err != nil {
		return witnessAnswer{err: err}
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := hc.Do(req)
	if err != nil {
		return witnessAnswer{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, kt.MaxCheckpointSize+1))
	if err != nil {
		return witnessAnswer{err: err}
	}
	if len(body) > kt.MaxCheckpointSize {
		return witnessAnswer{err: errors.New("an answer over the size of a checkpoint")}
	}
	return witnessAnswer{status: resp.StatusCode, body: body}
}

// forkEvidence returns the fork a witness's answer proves, if it does: a checkpoint
// of the same log and size as ours, with another body, signed by one of the log keys
// and cosigned by the witness. Anything less proves nothing and is not a fork.
func forkEvidence(ours *kt.Checkpoint, oursSigned, answer []byte, w *kt.WitnessKey, logKeys []string) *kt.ForkError {
	theirs, err := kt.OpenCheckpoint(answer, logKeys...)
	if err != nil || theirs.Size != ours.Size || theirs.Origin != ours.Origin || *theirs == *ours {
		return nil
	}
	if _, err := kt.VerifyCosignature(answer, w); err != nil {
		return nil
	}
	return &kt.ForkError{Origin: ours.Origin, Held: answer, Conflicting: oursSigned, HeldSize: theirs.Size, ConflictingSize: ours.Size,
		Reason: fmt.Sprintf("have the same size and different roots: witness %s cosigned the first, this client was shown the second (a split view)", w.Name())}
}

// checkWitnesses is the client's witness check, for the code that verifies lookups
// (acceptCheckpoint, kt.go) to call on each new checkpoint it accepts, after verifying it
// against the trusted log keys (logKeys, those of its origin) and its consistency with
// the last one kept: with Config.Witnesses set, the checkpoint must be cosigned by
// Config.WitnessQuorum of them (CheckWitnesses); without, it passes unchanged. It
// returns the checkpoint with its cosignatures, which is what to persist.
//
// A quorum not met yet (kt.ErrNotWitnessed: a witness that is slow, restarting, or
// one poll behind a fresh checkpoint) is asked again, every witnessRetry, until
// Config.KeyTransparencyWait has passed since the first try; then the last
// ErrNotWitnessed is returned. A fork is never retried: it is evidence, returned at
// once.
func (c *Client) checkWitnesses(ctx context.Context, logKeys []string, checkpoint []byte) ([]byte, error) {
	if len(c.cfg.Witnesses) == 0 {
		return checkpoint, nil
	}
	deadline := time.Now().Add(c.ktWait())
	for {
		out, err := CheckWitnesses(ctx, nil, c.cfg.Witnesses, c.cfg.WitnessQuorum, logKeys, checkpoint, c.cfg.Now())
		if !errors.Is(err, kt.ErrNotWitnessed) {
			return out, err
		}
		wait := min(witnessRetry, time.Until(deadline))
		if wait <= 0 {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (while waiting for the witnesses: %w)", err, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// witnessRetry is how long a lookup waits before it asks the witnesses again when
// fewer than the quorum cosigned: a fraction of the witness's default poll interval
// (1 s), so a witness one poll behind costs about one interval.
const witnessRetry = 250 * time.Millisecond
