package keystore

// The KeyBundle a keystore holds: built from its keys, and parsed and checked when read.

import (
	"fmt"
	"time"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/ident"
	envelopev1 "github.com/umbra-e2ee/umbra/proto/umbra/envelope/v1"
)

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
