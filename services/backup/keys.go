package backup

import (
	"container/list"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/cloudflare/circl/oprf"
)

// suite is the OPRF of every backup: RFC 9497 ristretto255-SHA512, verifiable mode.
var suite = oprf.SuiteRistretto255

// Domain-separation labels of what the service derives from its secret (HKDF-SHA256
// info strings). Changing one changes every OPRF key: never do it.
const (
	oprfSeedLabel    = "umbra backup v1 oprf seed"
	oprfKeyInfo      = "umbra backup v1 oprf key"
	secretCheckLabel = "umbra backup v1 secret check"
	// secretCheckSize is the length of the check value stored in backup.db.
	secretCheckSize = 16
	// elementSize is a serialised ristretto255 element (and the public key); proofSize
	// a serialised DLEQ proof (two scalars).
	elementSize = 32
	proofSize   = 64
)

// DefaultKeyCacheSize is how many derived OPRF keys the service keeps in memory when
// Config.KeyCacheSize is 0.
const DefaultKeyCacheSize = 10_000

// keyRef names one OPRF key: an app's identity's slot at one record version.
type keyRef struct {
	app      string
	identity string
	slot     uint32
	version  uint64
}

// oprfKey is a derived key, ready to evaluate with: circl's RFC 9497 verifiable
// server over it, and its serialised public key.
type oprfKey struct {
	server oprf.VerifiableServer
	// public is the serialised public key (32 bytes).
	public []byte
}

// keyDeriver derives the OPRF keys from the server secret, and keeps the most
// recently used ones.
type keyDeriver struct {
	secret []byte

	mu    sync.Mutex
	max   int
	keys  map[keyRef]*list.Element // of *cachedKey
	order *list.List               // most recently used at the front
}

type cachedKey struct {
	ref keyRef
	key *oprfKey
}

func newKeyDeriver(secret []byte, cacheSize int) *keyDeriver {
	return &keyDeriver{
		secret: secret,
		max:    cacheSize,
		keys:   make(map[keyRef]*list.Element),
		order:  list.New(),
	}
}

// seedInfo is the HKDF info of a key's seed: the label, then each part of ref with
// its length, so that no two refs share an info string.
func seedInfo(ref keyRef) []byte {
	b := make([]byte, 0, len(oprfSeedLabel)+len(ref.app)+len(ref.identity)+16)
	b = append(b, oprfSeedLabel...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(ref.app)))
	b = append(b, ref.app...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(ref.identity)))
	b = append(b, ref.identity...)
	b = append(b, byte(ref.slot))
	return binary.BigEndian.AppendUint64(b, ref.version)
}

// derivePrivate derives the OPRF private key of ref: a 32-byte seed from
// HKDF-SHA256(secret, info = seedInfo(ref)), then RFC 9497 DeriveKeyPair in verifiable
// mode with info oprfKeyInfo.
func derivePrivate(secret []byte, ref keyRef) (*oprf.PrivateKey, error) {
	seed, err := hkdf.Key(sha256.New, secret, nil, string(seedInfo(ref)), 32)
	if err != nil {
		return nil, fmt.Errorf("backup: derive OPRF seed: %w", err)
	}
	k, err := oprf.DeriveKey(suite, oprf.VerifiableMode, seed, []byte(oprfKeyInfo))
	if err != nil {
		return nil, fmt.Errorf("backup: derive OPRF key: %w", err)
	}
	return k, nil
}

// key returns the OPRF key of ref, derived or from the cache.
func (d *keyDeriver) key(ref keyRef) (*oprfKey, error) {
	d.mu.Lock()
	if e, ok := d.keys[ref]; ok {
		d.order.MoveToFront(e)
		k := e.Value.(*cachedKey).key
		d.mu.Unlock()
		return k, nil
	}
	d.mu.Unlock()

	priv, err := derivePrivate(d.secret, ref)
	if err != nil {
		return nil, err
	}
	public, err := priv.Public().MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("backup: encode OPRF public key: %w", err)
	}
	k, err := newOPRFKey(priv, public)
	if err != nil {
		return nil, err
	}
	if d.max <= 0 {
		return k, nil
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.keys[ref]; ok { // derived concurrently: keep the first
		d.order.MoveToFront(e)
		return e.Value.(*cachedKey).key, nil
	}
	if d.order.Len() >= d.max {
		old := d.order.Back()
		delete(d.keys, old.Value.(*cachedKey).ref)
		d.order.Remove(old)
	}
	d.keys[ref] = d.order.PushFront(&cachedKey{ref: ref, key: k})
	return k, nil
}

// cached returns the number of keys kept.
func (d *keyDeriver) cached() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.order.Len()
}

// secretCheck is the value backup.db keeps to recognise its secret on the next start:
// HKDF-SHA256(secret, info = secretCheckLabel), 16 bytes. It reveals nothing usable
// about the secret, and no OPRF key can be derived from it.
func secretCheck(secret []byte) []byte {
	c, err := hkdf.Key(sha256.New, secret, nil, secretCheckLabel, secretCheckSize)
	if err != nil {
		panic(err) // only for an output longer than HKDF-SHA256 allows
	}
	return c
}

// sameCheck compares two check values in constant time.
func sameCheck(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// newOPRFKey prepares priv (whose serialised public key is public) for evaluation.
func newOPRFKey(priv *oprf.PrivateKey, public []byte) (*oprfKey, error) {
	return &oprfKey{server: oprf.NewVerifiableServer(suite, priv), public: public}, nil
}

// evaluate runs RFC 9497 BlindEvaluate in verifiable mode with k on one blinded
// element, through circl, and returns the serialised evaluated element and DLEQ proof.
func (k *oprfKey) evaluate(blinded oprf.Blinded) (evaluated, proof []byte, err error) {
	ev, err := k.server.Evaluate(&oprf.EvaluationRequest{Elements: []oprf.Blinded{blinded}})
	if err != nil {
		return nil, nil, fmt.Errorf("backup: evaluate: %w", err)
	}
	if evaluated, err = ev.Elements[0].MarshalBinaryCompress(); err != nil {
		return nil, nil, fmt.Errorf("backup: encode evaluated element: %w", err)
	}
	if proof, err = ev.Proof.MarshalBinary(); err != nil {
		return nil, nil, fmt.Errorf("backup: encode proof: %w", err)
	}
	return evaluated, proof, nil
}
