package sdk

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// The pin file: what this client trusts, kept beside the keystore
// (docs/wire-format.md, 5.7). It holds public keys and card ids only.

const (
	pinFileVersion = 1
	// maxPinnedCards bounds a contact's pinned chain; the oldest entries go first.
	maxPinnedCards = 256
)

// How a pinned card or service key came to be trusted.
const (
	pinFirstUse = "first-use" // the first card (or service keys) seen
	pinEndorsed = "endorsed"  // chained by endorsements (rotation statements) this client verified
	pinAccepted = "accepted"  // a key change the user accepted (AcceptKeyChange)
	pinWarned   = "warned"    // a key change taken under KeyChangeWarn
	pinConfig   = "config"    // a service key from Config.ServiceKeys
)

// pinStateFile is the pin file's kind of state file.
var pinStateFile = stateFile{
	what:    "the pin file",
	file:    "the pin file",
	holds:   "it holds which keys this device trusts; restore it, or remove it to trust on first use again",
	version: pinFileVersion,
}

type pinFile struct {
	Version     int                    `json:"version"`
	ServiceKeys []*pinnedServiceKey    `json:"service_keys,omitempty"`
	Contacts    map[string]*contactPin `json:"contacts,omitempty"`
}

type pinnedServiceKey struct {
	KeyID     string            `json:"key_id"`
	PublicKey ed25519.PublicKey `json:"public_key"`
	Source    string            `json:"source"`
	// RetiredAt is when a rotation retired the key, once known; zero for a key that
	// still signs.
	RetiredAt time.Time `json:"retired_at,omitzero"`
	PinnedAt  time.Time `json:"pinned_at"`
}

type contactPin struct {
	// Chain is every card of the contact this client accepted, oldest first; the
	// last is the head, the card it encrypts to.
	Chain      []pinnedCard   `json:"chain"`
	Verified   bool           `json:"verified,omitempty"`
	VerifiedAt time.Time      `json:"verified_at,omitzero"`
	Pending    *pendingChange `json:"pending,omitempty"`
}

type pinnedCard struct {
	CardID     []byte            `json:"card_id"`
	SigningKey ed25519.PublicKey `json:"signing_key"`
	How        string            `json:"how"`
	At         time.Time         `json:"at"`
}

// pendingChange is a key change the client refused, kept until the user accepts it.
type pendingChange struct {
	CardID     []byte            `json:"card_id"`
	SigningKey ed25519.PublicKey `json:"signing_key"`
	Reason     KeyChangeReason   `json:"reason"`
	Detail     string            `json:"detail,omitempty"`
	At         time.Time         `json:"at"`
}

func (p *contactPin) head() pinnedCard { return p.Chain[len(p.Chain)-1] }

// holds reports whether the pin's chain holds card id.
func (p *contactPin) holds(id []byte) bool {
	return slices.ContainsFunc(p.Chain, func(pc pinnedCard) bool { return bytes.Equal(pc.CardID, id) })
}

// push appends cards to the chain, dropping the oldest past maxPinnedCards.
func (p *contactPin) push(cards ...pinnedCard) {
	p.Chain = append(p.Chain, cards...)
	if n := len(p.Chain) - maxPinnedCards; n > 0 {
		p.Chain = slices.Delete(p.Chain, 0, n)
	}
}

func (f *pinFile) serviceKey(id string) *pinnedServiceKey {
	for _, k := range f.ServiceKeys {
		if k.KeyID == id {
			return k
		}
	}
	return nil
}

// readPinFile reads the pin file at path; a missing file is an empty one.
func readPinFile(path string) (*pinFile, error) {
	f := &pinFile{Version: pinFileVersion, Contacts: map[string]*contactPin{}}
	if err := pinStateFile.read(path, f, &f.Version); err != nil {
		return nil, err
	}
	if f.Contacts == nil {
		f.Contacts = map[string]*contactPin{}
	}
	for id, p := range f.Contacts {
		if p == nil || len(p.Chain) == 0 {
			return nil, fmt.Errorf("sdk: the pin file %s is damaged: contact %s has no pinned card", path, id)
		}
	}
	return f, nil
}

// pinsPath is where the client keeps its pins.
func (c *Client) pinsPath() string {
	if c.cfg.TrustStorePath != "" {
		return c.cfg.TrustStorePath
	}
	return c.cfg.KeystorePath + ".trust"
}

// loadPins reads the pin file into the client, adding the configured service keys.
func (c *Client) loadPins() error {
	f, err := readPinFile(c.pinsPath())
	if err != nil {
		return err
	}
	if err := addConfiguredServiceKeys(f, c.cfg.ServiceKeys, c.cfg.Now()); err != nil {
		return err
	}
	c.pinMu.Lock()
	c.pins = f
	c.pinMu.Unlock()
	return nil
}

// addConfiguredServiceKeys pins the service keys an app ships with.
func addConfiguredServiceKeys(f *pinFile, keys []ServiceKeyPin, now time.Time) error {
	for _, k := range keys {
		if k.KeyID == "" || len(k.PublicKey) != ed25519.PublicKeySize {
			return fmt.Errorf("sdk: Config.ServiceKeys: key %q needs an id and a 32-byte Ed25519 public key", k.KeyID)
		}
		if have := f.serviceKey(k.KeyID); have != nil {
			if !have.PublicKey.Equal(k.PublicKey) {
				return fmt.Errorf("%w: Config.ServiceKeys names key %q with another public key than the one pinned in the pin file", ErrUnknownServiceKey, k.KeyID)
			}
			continue
		}
		f.ServiceKeys = append(f.ServiceKeys, &pinnedServiceKey{KeyID: k.KeyID, PublicKey: k.PublicKey, Source: pinConfig, PinnedAt: now})
	}
	return nil
}

// contactPin returns a copy of identity's pin, or nil.
func (c *Client) contactPin(identity string) *contactPin {
	c.pinMu.Lock()
	defer c.pinMu.Unlock()
	p := c.pins.Contacts[identity]
	if p == nil {
		return nil
	}
	// A copy of this contact's pin alone: copying the whole file for every lookup
	// would make a check of n members' cards cost n².
	b, _ := json.Marshal(p)
	out := &contactPin{}
	json.Unmarshal(b, out)
	return out
}

// updatePins changes the pins with fn and saves them. It reads the file again first,
// so that what another process (another `umbra` command) pinned meanwhile is kept;
// fn sees the file as it is on disk.
func (c *Client) updatePins(fn func(*pinFile) error) error {
	c.pinMu.Lock()
	defer c.pinMu.Unlock()
	f, err := readPinFile(c.pinsPath())
	if err != nil {
		return err
	}
	if err := addConfiguredServiceKeys(f, c.cfg.ServiceKeys, c.cfg.Now()); err != nil {
		return err
	}
	if err := fn(f); err != nil {
		return err
	}
	if err := pinStateFile.write(c.pinsPath(), f); err != nil {
		return err
	}
	c.pins = f
	return nil
}
