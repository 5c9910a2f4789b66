package sdk

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/kt"
)

// The key transparency state file: what this client knows of the card service's log,
// kept beside the keystore (docs/wire-format.md, 13.10). It holds no secret: the log
// keys it trusts, the app its map keys are computed for, the largest checkpoint it
// verified, and what its own monitoring last saw of the user's identity.

const ktStateVersion = 1

// ktStateFile is the key transparency state's kind of state file.
var ktStateFile = stateFile{
	what:    "the key transparency state",
	file:    "the key transparency state file",
	holds:   "it holds the log key and the checkpoint this device trusts; restore it, or remove it to trust the log's key and checkpoint on first use again",
	version: ktStateVersion,
}

type ktState struct {
	Version int    `json:"version"`
	AppID   string `json:"app_id,omitempty"`
	// LogKeys are the log keys pinned on first use (Config.LogKeys are trusted
	// besides them, without being written here).
	LogKeys []pinnedLogKey `json:"log_keys,omitempty"`
	// Checkpoint is the signed note of the largest checkpoint verified: each later
	// one must be consistent with it.
	Checkpoint string `json:"checkpoint,omitempty"`
	// Own is the user's map entry as the last monitoring check saw it.
	Own *ownEntry `json:"own,omitempty"`
	// RevokedHere are the cards this device revoked (RevokeCard): the monitor expects
	// their revocations.
	RevokedHere [][]byte `json:"revoked_here,omitempty"`
}

type pinnedLogKey struct {
	VerifierKey string    `json:"verifier_key"`
	Source      string    `json:"source"`
	PinnedAt    time.Time `json:"pinned_at"`
}

// ownEntry is the user's map entry at a checkpoint; Card is empty when it named none,
// and Present is false when there was no entry.
type ownEntry struct {
	Present        bool      `json:"present"`
	CardID         []byte    `json:"card_id,omitempty"`
	CardLogIndex   uint64    `json:"card_log_index"`
	LatestLogIndex uint64    `json:"latest_log_index"`
	CheckpointSize uint64    `json:"checkpoint_size"`
	CheckedAt      time.Time `json:"checked_at"`
}

// kept parses the kept checkpoint's body. Its signature was verified when it was kept;
// it is not verified again, so that a log key the app stops shipping does not make
// the file unreadable.
func (s *ktState) kept() (*kt.Checkpoint, error) {
	if s.Checkpoint == "" {
		return nil, nil
	}
	body, _, ok := strings.Cut(s.Checkpoint, "\n\n")
	if !ok {
		return nil, fmt.Errorf("sdk: the key transparency state file's checkpoint is damaged: no signature")
	}
	cp, err := kt.ParseCheckpoint(body + "\n")
	if err != nil {
		return nil, fmt.Errorf("sdk: the key transparency state file's checkpoint is damaged: %w", err)
	}
	return cp, nil
}

func (s *ktState) revokedHere(id []byte) bool {
	for _, r := range s.RevokedHere {
		if bytes.Equal(r, id) {
			return true
		}
	}
	return false
}

// ktPath is where the client keeps its key transparency state.
func (c *Client) ktPath() string {
	if c.cfg.KeyTransparencyStatePath != "" {
		return c.cfg.KeyTransparencyStatePath
	}
	return c.cfg.KeystorePath + ".kt"
}

// readKT reads the state file; a missing file is an empty state.
func (c *Client) readKT() (*ktState, error) {
	s := &ktState{Version: ktStateVersion}
	if err := ktStateFile.read(c.ktPath(), s, &s.Version); err != nil {
		return nil, err
	}
	return s, nil
}

// updateKT changes the state with fn and saves it if fn says so. It reads the file
// again first, so that what another process kept meanwhile is seen by fn.
func (c *Client) updateKT(fn func(*ktState) (bool, error)) error {
	c.ktMu.Lock()
	defer c.ktMu.Unlock()
	s, err := c.readKT()
	if err != nil {
		return err
	}
	write, err := fn(s)
	if err != nil || !write {
		return err
	}
	return ktStateFile.write(c.ktPath(), s)
}
