package keystore

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/umbra-e2ee/umbra/pkg/argon2id"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
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

// checkArgon2id refuses a passphrase cost outside what RFC 9106 allows within
// argon2id's limits: t 1-16, p 1-64, m from 8 KiB per thread to 4 GiB. The salt is
// checked apart, when a file is opened.
func checkArgon2id(p argon2id.Params) error {
	if p.Time < 1 || p.Time > argon2id.MaxTime || p.Threads < 1 || p.Threads > argon2id.MaxThreads || p.MemoryKiB < 8*p.Threads || p.MemoryKiB > argon2id.MaxMemoryKiB {
		return errorf(e2ee.ErrMalformed, "Argon2id parameters t=%d m=%d KiB p=%d are outside t 1-16, p 1-64, m 8p KiB-4 GiB (RFC 9106)", p.Time, p.MemoryKiB, p.Threads)
	}
	return nil
}

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
	if err := writeFileAtomic(ks.path, data); err != nil {
		return fmt.Errorf("e2ee: save keystore: %w", err)
	}
	return nil
}

func (ks *Keystore) bundleLocked() ([]byte, error) {
	m := &envelopev1.KeyBundle{Version: keyBundleVersion, Identity: ks.identity, CurrentCardId: ks.current}
	for _, k := range ks.keys {
		kem, err := k.kp.KEMPrivateKey()
		if err != nil {
			return nil, fmt.Errorf("e2ee: serialise the KEM key of card %x: %w", k.cardID, err)
		}
		s := &envelopev1.StoredKey{
			CardId:                  k.cardID,
			Suite:                   k.kp.Suite,
			SigningSeed:             k.kp.SigningSeed(),
			KemPrivateKey:           kem,
			AddedAtUnixSeconds:      k.addedAt.Unix(),
			SupersededAtUnixSeconds: 0,
		}
		if !k.supersededAt.IsZero() {
			s.SupersededAtUnixSeconds = k.supersededAt.Unix()
		}
		m.Keys = append(m.Keys, s)
	}
	b, err := e2ee.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxKeyBundleSize {
		return nil, errorf(e2ee.ErrTooLarge, "key bundle is %d bytes; at most %d", len(b), MaxKeyBundleSize)
	}
	return b, nil
}

// encode returns the file's bytes: the magic, then a KeystoreFile.
func (ks *Keystore) encode(bundle []byte) ([]byte, error) {
	h := &envelopev1.KeystoreHeader{Version: keystoreVersion, Protection: envelopev1.KeystoreProtection_KEYSTORE_PROTECTION_NONE}
	if ks.encrypted {
		nonce := make([]byte, chacha20poly1305.NonceSize)
		if _, err := rand.Read(nonce); err != nil {
			return nil, fmt.Errorf("e2ee: keystore nonce: %w", err)
		}
		h = &envelopev1.KeystoreHeader{
			Version:    keystoreVersion,
			Protection: envelopev1.KeystoreProtection_KEYSTORE_PROTECTION_ARGON2ID_CHACHA20_POLY1305,
			Argon2Id: &envelopev1.KeystoreArgon2Id{
				Time: ks.kdf.Time, MemoryKib: ks.kdf.MemoryKiB, Threads: ks.kdf.Threads, Salt: ks.kdf.Salt,
			},
			KeyCheck: ks.keyCheck,
			Nonce:    nonce,
		}
	}
	header, err := e2ee.Marshal(h)
	if err != nil {
		return nil, err
	}
	if ks.encrypted {
		c, err := chacha20poly1305.New(ks.key)
		if err != nil {
			return nil, err
		}
		bundle = c.Seal(nil, h.GetNonce(), bundle, header)
	}
	file, err := e2ee.Marshal(&envelopev1.KeystoreFile{Header: header, KeyBundle: bundle})
	if err != nil {
		return nil, err
	}
	return append([]byte(keystoreMagic), file...), nil
}

// decode checks a keystore file and returns its KeyBundle bytes, setting ks's
// protection from its header.
func (ks *Keystore) decode(data, passphrase []byte) ([]byte, error) {
	if !bytes.HasPrefix(data, []byte(keystoreMagic)) {
		return nil, errorf(e2ee.ErrMalformed, "not an Umbra keystore file (no %q magic)", keystoreMagic)
	}
	header, sealed, err := e2ee.ParseBytesPair("keystore file", data[len(keystoreMagic):])
	if err != nil {
		return nil, err
	}
	var h envelopev1.KeystoreHeader
	if err := e2ee.UnmarshalStrict("keystore header", header, &h); err != nil {
		return nil, err
	}
	if h.GetVersion() != keystoreVersion {
		return nil, errorf(e2ee.ErrMalformed, "keystore version %d; this client reads version %d", h.GetVersion(), keystoreVersion)
	}
	switch h.GetProtection() {
	case envelopev1.KeystoreProtection_KEYSTORE_PROTECTION_NONE:
		if h.GetArgon2Id() != nil || len(h.GetKeyCheck()) != 0 || len(h.GetNonce()) != 0 {
			return nil, errorf(e2ee.ErrMalformed, "unencrypted keystore with encryption parameters")
		}
		if len(passphrase) > 0 {
			return nil, errorf(e2ee.ErrPassphrase, "the keystore is not encrypted, yet a passphrase was given")
		}
		return sealed, nil
	case envelopev1.KeystoreProtection_KEYSTORE_PROTECTION_ARGON2ID_CHACHA20_POLY1305:
	default:
		return nil, errorf(e2ee.ErrUnknownSuite, "keystore protection %d", int32(h.GetProtection()))
	}
	a := h.GetArgon2Id()
	if a == nil || a.GetThreads() > 64 {
		return nil, errorf(e2ee.ErrMalformed, "keystore Argon2id parameters missing or out of bounds")
	}
	kdf := argon2id.Params{Time: a.GetTime(), MemoryKiB: a.GetMemoryKib(), Threads: a.GetThreads(), Salt: bytes.Clone(a.GetSalt())}
	if err := checkArgon2id(kdf); err != nil {
		return nil, err
	}
	switch {
	case len(a.GetSalt()) < 16 || len(a.GetSalt()) > 64:
		return nil, errorf(e2ee.ErrMalformed, "keystore salt is %d bytes; want 16 to 64", len(a.GetSalt()))
	case len(h.GetKeyCheck()) != keyCheckSize:
		return nil, errorf(e2ee.ErrMalformed, "keystore key check is %d bytes; want %d", len(h.GetKeyCheck()), keyCheckSize)
	case len(h.GetNonce()) != chacha20poly1305.NonceSize:
		return nil, errorf(e2ee.ErrMalformed, "keystore nonce is %d bytes; want %d", len(h.GetNonce()), chacha20poly1305.NonceSize)
	case len(passphrase) == 0:
		return nil, errorf(e2ee.ErrPassphrase, "the keystore is encrypted; a passphrase is required")
	}
	key, keyCheck, err := stretch(passphrase, kdf)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(keyCheck, h.GetKeyCheck()) != 1 {
		return nil, errorf(e2ee.ErrPassphrase, "wrong passphrase (or altered Argon2id parameters)")
	}
	c, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, err
	}
	bundle, err := c.Open(nil, h.GetNonce(), sealed, header)
	if err != nil {
		return nil, errorf(e2ee.ErrDecrypt, "the keystore's passphrase is right but its content does not authenticate: the file was altered or damaged")
	}
	ks.encrypted, ks.kdf, ks.key, ks.keyCheck = true, kdf, key, keyCheck
	return bundle, nil
}

// stretch derives the keystore's AEAD key and key check value from a passphrase, with
// p's cost and salt.
func stretch(passphrase []byte, p argon2id.Params) (key, keyCheck []byte, err error) {
	master := p.Key(passphrase, 32)
	if key, err = hkdf.Key(sha256.New, master, nil, string(e2ee.Labelled(LabelKeystoreEncryptionKey)), keystoreKeySize); err != nil {
		return nil, nil, fmt.Errorf("e2ee: derive the keystore key: %w", err)
	}
	if keyCheck, err = hkdf.Key(sha256.New, master, nil, string(e2ee.Labelled(LabelKeystoreKeyCheck)), keyCheckSize); err != nil {
		return nil, nil, fmt.Errorf("e2ee: derive the keystore key check: %w", err)
	}
	return key, keyCheck, nil
}

type keyBundle struct {
	identity string
	current  []byte
	keys     []*storedKey
	byID     map[string]*storedKey
}

// parseKeyBundle parses and checks an encoded KeyBundle.
func parseKeyBundle(b []byte) (*keyBundle, error) {
	if len(b) > MaxKeyBundleSize {
		return nil, errorf(e2ee.ErrTooLarge, "key bundle is %d bytes; at most %d", len(b), MaxKeyBundleSize)
	}
	var m envelopev1.KeyBundle
	if err := e2ee.UnmarshalStrict("key bundle", b, &m); err != nil {
		return nil, err
	}
	switch {
	case m.GetVersion() != keyBundleVersion:
		return nil, errorf(e2ee.ErrMalformed, "key bundle version %d; this client reads version %d", m.GetVersion(), keyBundleVersion)
	case len(m.GetKeys()) > MaxStoredKeys:
		return nil, errorf(e2ee.ErrTooLarge, "key bundle holds %d keys; at most %d", len(m.GetKeys()), MaxStoredKeys)
	}
	if err := ident.ValidUser("key bundle identity", m.GetIdentity()); err != nil {
		return nil, errorf(e2ee.ErrMalformed, "%v", err)
	}
	out := &keyBundle{identity: m.GetIdentity(), byID: make(map[string]*storedKey, len(m.GetKeys()))}
	for i, s := range m.GetKeys() {
		if len(s.GetCardId()) != e2ee.CardIDSize {
			return nil, errorf(e2ee.ErrMalformed, "key bundle key %d: card id is %d bytes; want %d", i, len(s.GetCardId()), e2ee.CardIDSize)
		}
		if out.byID[string(s.GetCardId())] != nil {
			return nil, errorf(e2ee.ErrMalformed, "key bundle key %d: card %x has two keys", i, s.GetCardId())
		}
		kp, err := e2ee.NewKeyPair(s.GetSuite(), s.GetSigningSeed(), s.GetKemPrivateKey())
		if err != nil {
			return nil, fmt.Errorf("key bundle key %d: %w", i, err)
		}
		k := &storedKey{cardID: s.GetCardId(), kp: kp, addedAt: time.Unix(s.GetAddedAtUnixSeconds(), 0).UTC()}
		if t := s.GetSupersededAtUnixSeconds(); t != 0 {
			k.supersededAt = time.Unix(t, 0).UTC()
		}
		out.keys = append(out.keys, k)
		out.byID[string(k.cardID)] = k
	}
	switch cur := out.byID[string(m.GetCurrentCardId())]; {
	case len(m.GetCurrentCardId()) == 0 && len(out.keys) > 0:
		return nil, errorf(e2ee.ErrMalformed, "key bundle has keys but no current key")
	case len(m.GetCurrentCardId()) > 0 && cur == nil:
		return nil, errorf(e2ee.ErrMalformed, "key bundle's current card %x has no key", m.GetCurrentCardId())
	case cur != nil && !cur.supersededAt.IsZero():
		return nil, errorf(e2ee.ErrMalformed, "key bundle's current key is marked superseded")
	case cur != nil:
		out.current = cur.cardID
	}
	return out, nil
}

// readLimited reads the file at path, refusing one over limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("e2ee: open keystore: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("e2ee: read keystore: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, errorf(e2ee.ErrTooLarge, "keystore file is over %d bytes", limit)
	}
	return data, nil
}

// writeFileAtomic replaces path with data, mode 0600, so that a crash leaves either
// the old file or the new one, never a mix.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// errorf returns a failure of one of e2ee's kinds, which the keystore's callers test
// with errors.Is (e2ee.ErrPassphrase, e2ee.ErrDecrypt...), worded as when the keystore
// was part of pkg/e2ee.
func errorf(kind error, format string, args ...any) error {
	return &e2ee.Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}
