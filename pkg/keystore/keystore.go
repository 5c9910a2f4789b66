package keystore

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/umbra-e2ee/umbra/pkg/argon2id"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	"github.com/umbra-e2ee/umbra/pkg/internal/atomicfile"
)

// The keystore's labels: HKDF info of the key that encrypts the key bundle, and of the
// value that tells a wrong passphrase from a damaged file.
const (
	LabelKeystoreEncryptionKey = "umbra/v1/keystore-encryption-key"
	LabelKeystoreKeyCheck      = "umbra/v1/keystore-key-check"
)

// Limits and constants of the keystore file.
const (
	// MaxKeyBundleSize is the largest KeyBundle: what a backup record holds.
	MaxKeyBundleSize = 1 << 20
	// MaxStoredKeys bounds the keys of a bundle, well within MaxKeyBundleSize (a key
	// is about 120 bytes encoded).
	MaxStoredKeys = 5000
	// MaxKeystoreFileSize bounds the file read by Open.
	MaxKeystoreFileSize = MaxKeyBundleSize + 4096

	keystoreMagic    = "umbra keystore v1\n"
	keystoreVersion  = 1
	keyBundleVersion = 1
	keyCheckSize     = 16
	keystoreKeySize  = chacha20poly1305.KeySize
)

// Options are the choices made when a keystore is created.
type Options struct {
	// Identity whose keys the keystore holds. Required, unless KeyBundle names it.
	Identity string
	// Passphrase that encrypts the file. Required unless NoPassphrase.
	Passphrase []byte
	// NoPassphrase stores the keys unencrypted, protected only by the file's mode
	// (0600). It must be asked for explicitly and excludes Passphrase.
	NoPassphrase bool
	// Argon2id cost of the passphrase; zero Time, MemoryKiB and Threads mean
	// argon2id.Default. Its Salt is not used: every keystore draws a fresh one.
	Argon2id argon2id.Params
	// KeyBundle, if set, are the encoded keys to start with (a KeyBundle, as
	// Keystore.KeyBundle returns it): a restore from a backup.
	KeyBundle []byte
}

// Keystore is the local file of a user's private keys: the current key pair and every
// one it replaced, by card id. Its methods are safe for concurrent use; changes reach
// the file when Save returns.
type Keystore struct {
	path string

	mu       sync.Mutex
	now      func() time.Time
	identity string
	current  []byte
	keys     []*storedKey // in the order they were added
	byID     map[string]*storedKey

	// With a passphrase: the Argon2id parameters and salt, and what they yield. The
	// key is kept rather than the passphrase, and every Save uses a fresh nonce.
	encrypted bool
	kdf       argon2id.Params
	key       []byte
	keyCheck  []byte
}

type storedKey struct {
	cardID       []byte
	kp           *e2ee.KeyPair
	addedAt      time.Time
	supersededAt time.Time
}

// Create creates the keystore file at path (and its directory, mode 0700) and writes
// it: empty but for the identity, or holding opts.KeyBundle. It refuses to replace an
// existing file (the error wraps fs.ErrExist).
func Create(path string, opts Options) (*Keystore, error) {
	ks := &Keystore{path: path, now: time.Now, identity: opts.Identity, byID: map[string]*storedKey{}}
	if len(opts.KeyBundle) > 0 {
		b, err := parseKeyBundle(opts.KeyBundle)
		if err != nil {
			return nil, err
		}
		if opts.Identity != "" && opts.Identity != b.identity {
			return nil, errorf(e2ee.ErrMalformed, "the key bundle is %s's, not %s's", b.identity, opts.Identity)
		}
		ks.identity, ks.current, ks.keys, ks.byID = b.identity, b.current, b.keys, b.byID
	}
	if err := ident.ValidUser("keystore identity", ks.identity); err != nil {
		return nil, errorf(e2ee.ErrMalformed, "%v", err)
	}
	switch {
	case opts.NoPassphrase && len(opts.Passphrase) > 0:
		return nil, errorf(e2ee.ErrPassphrase, "both a passphrase and NoPassphrase given")
	case !opts.NoPassphrase && len(opts.Passphrase) == 0:
		return nil, errorf(e2ee.ErrPassphrase, "no passphrase; an unencrypted keystore needs NoPassphrase")
	case !opts.NoPassphrase:
		kdf := opts.Argon2id
		if kdf.Time == 0 && kdf.MemoryKiB == 0 && kdf.Threads == 0 {
			kdf = argon2id.Default
		}
		if err := checkArgon2id(kdf); err != nil {
			return nil, err
		}
		kdf.Salt = make([]byte, argon2id.SaltSize)
		if _, err := rand.Read(kdf.Salt); err != nil {
			return nil, fmt.Errorf("e2ee: keystore salt: %w", err)
		}
		ks.encrypted, ks.kdf = true, kdf
		key, keyCheck, err := stretch(opts.Passphrase, kdf)
		if err != nil {
			return nil, err
		}
		ks.key, ks.keyCheck = key, keyCheck
	}
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("e2ee: create keystore %s: %w", path, os.ErrExist)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("e2ee: create keystore: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("e2ee: create keystore: %w", err)
	}
	if err := ks.Save(); err != nil {
		return nil, err
	}
	return ks, nil
}

// Open reads the keystore file at path. passphrase must be the one it was created with,
// and empty for a keystore created with NoPassphrase: a wrong, missing or superfluous
// passphrase is e2ee.ErrPassphrase (a passphrase given for an unencrypted file is
// refused, so that nobody can swap in an unencrypted keystore of their own unnoticed).
// A file that was altered or damaged is e2ee.ErrDecrypt or e2ee.ErrMalformed; a missing
// file is an error wrapping fs.ErrNotExist.
func Open(path string, passphrase []byte) (*Keystore, error) {
	data, err := readLimited(path, MaxKeystoreFileSize)
	if err != nil {
		return nil, err
	}
	ks := &Keystore{path: path, now: time.Now}
	bundle, err := ks.decode(data, passphrase)
	if err != nil {
		return nil, err
	}
	b, err := parseKeyBundle(bundle)
	if err != nil {
		return nil, err
	}
	ks.identity, ks.current, ks.keys, ks.byID = b.identity, b.current, b.keys, b.byID
	return ks, nil
}

// Remove deletes the keystore file at path. The keys are gone unless a backup holds
// them.
func Remove(path string) error {
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("e2ee: remove keystore: %w", err)
	}
	return nil
}

// Path returns the keystore's file.
func (ks *Keystore) Path() string { return ks.path }

// Identity returns the identity whose keys these are.
func (ks *Keystore) Identity() string {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.identity
}

// Current returns the current key pair and its card id, or nils if there is none yet.
func (ks *Keystore) Current() (*e2ee.KeyPair, []byte) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	k := ks.byID[string(ks.current)]
	if k == nil {
		return nil, nil
	}
	return k.kp, bytes.Clone(k.cardID)
}

// SetCurrent makes kp, the key pair of card cardID, the current one; the previous
// current key stays, superseded, so that what was sent to its card still decrypts.
// Setting the current key again is a no-op; a superseded key cannot become current
// again. Call Save to write the change.
func (ks *Keystore) SetCurrent(kp *e2ee.KeyPair, cardID []byte) error {
	if kp == nil || kp.KEM == nil || len(kp.Signing) != ed25519.PrivateKeySize {
		return errorf(e2ee.ErrMalformed, "no key pair")
	}
	if len(cardID) != e2ee.CardIDSize {
		return errorf(e2ee.ErrMalformed, "card id is %d bytes; want %d", len(cardID), e2ee.CardIDSize)
	}
	if err := e2ee.CheckSuite(kp.Suite); err != nil {
		return err
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if k := ks.byID[string(cardID)]; k != nil {
		if bytes.Equal(cardID, ks.current) && k.kp.Equal(kp) {
			return nil
		}
		return errorf(e2ee.ErrMalformed, "card %x already has a key in the keystore", cardID)
	}
	if len(ks.keys) >= MaxStoredKeys {
		return errorf(e2ee.ErrTooLarge, "the keystore holds %d keys; at most %d", len(ks.keys), MaxStoredKeys)
	}
	now := ks.now().Truncate(time.Second)
	if old := ks.byID[string(ks.current)]; old != nil {
		old.supersededAt = now
	}
	k := &storedKey{cardID: bytes.Clone(cardID), kp: kp, addedAt: now}
	ks.keys = append(ks.keys, k)
	ks.byID[string(k.cardID)] = k
	ks.current = k.cardID
	return nil
}

// KeyFor returns the key pair of card cardID, current or superseded, or nil if the
// keystore has none: e2ee.Decrypt's keyFor.
func (ks *Keystore) KeyFor(cardID []byte) *e2ee.KeyPair {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if k := ks.byID[string(cardID)]; k != nil {
		return k.kp
	}
	return nil
}

// KeyBundle returns every key of the keystore as an encoded KeyBundle (what a backup
// encrypts). The bytes are secret.
func (ks *Keystore) KeyBundle() ([]byte, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.bundleLocked()
}

// Save writes the keystore to its file atomically (a temporary file in the same
// directory, synced, then renamed over it, then the directory synced), mode 0600.
func (ks *Keystore) Save() error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	bundle, err := ks.bundleLocked()
	if err != nil {
		return err
	}
	data, err := ks.encode(bundle)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(ks.path, data); err != nil {
		return fmt.Errorf("e2ee: save keystore: %w", err)
	}
	return nil
}

// errorf returns a failure of one of e2ee's kinds, which the keystore's callers test
// with errors.Is (e2ee.ErrPassphrase, e2ee.ErrDecrypt...), worded as when the keystore
// was part of pkg/e2ee.
func errorf(kind error, format string, args ...any) error {
	return &e2ee.Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}
