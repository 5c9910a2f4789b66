package sdk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/keystore"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
)

// The user's own keys and card: register, rotate, reset, publish, revoke, unregister.

// Register creates the user's keys, publishes their card, and saves the keys in the
// keystore. It refuses a user who already has keys here or an active card anywhere
// (restore the keys from a backup; if every key is lost, ResetKeys), and a user whose
// earlier cards were all revoked (ErrResetGrantRequired: ResetKeys).
func (c *Client) Register(ctx context.Context) (*Card, error) {
	if c.HasPrivateKey() {
		return nil, fmt.Errorf("%w: the keystore already holds keys", ErrAlreadyRegistered)
	}
	return c.registerFresh(ctx, "")
}

// registerFresh creates a keystore holding a new key pair and publishes its card, a
// first card or, with grant, a reset card. The keystore is removed again if the card
// is not published.
func (c *Client) registerFresh(ctx context.Context, grant string) (*Card, error) {
	me, err := c.Identity(ctx)
	if err != nil {
		return nil, err
	}
	kp, content, sig, err := c.newUnchainedCard(me)
	if err != nil {
		return nil, err
	}
	// The key is on disk before its card is public, so a crash can never leave a card
	// whose private key is lost.
	ks, err := keystore.Create(c.cfg.KeystorePath, keystore.Options{Identity: me, Passphrase: c.passphrase(), NoPassphrase: c.cfg.NoPassphrase, Argon2id: c.cfg.keystoreArgon2id})
	if err != nil {
		return nil, fmt.Errorf("sdk: create keystore: %w", err)
	}
	if err := ks.SetCurrent(kp, e2ee.CardID(content)); err != nil {
		keystore.Remove(c.cfg.KeystorePath)
		return nil, err
	}
	if err := ks.Save(); err != nil {
		keystore.Remove(c.cfg.KeystorePath)
		return nil, fmt.Errorf("sdk: save keystore: %w", err)
	}
	resp, err := c.cards.PublishCard(ctx, &cardv1.PublishCardRequest{Content: content, SelfSignature: sig, ResetGrant: grant})
	if err != nil {
		keystore.Remove(c.cfg.KeystorePath)
		return nil, publishError(err, me)
	}
	card, err := c.verify(ctx, resp.GetCard())
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.ks = ks
	c.mu.Unlock()
	return card, nil
}

// newUnchainedCard makes a new key pair and a self-signed card of me for it that names
// no predecessor: the card of a first publication or of a reset.
func (c *Client) newUnchainedCard(me string) (kp *e2ee.KeyPair, content, sig []byte, err error) {
	kp, err = e2ee.GenerateKeyPair(c.cfg.Suite)
	if err != nil {
		return nil, nil, nil, err
	}
	content, sig, err = e2ee.NewCard(kp, me, c.cfg.Now(), nil)
	if err != nil {
		return nil, nil, nil, err
	}
	return kp, content, sig, nil
}

// publishError explains a refused publication of a card of me without an endorsement.
func publishError(err error, me string) error {
	switch status.Code(err) {
	case codes.AlreadyExists:
		return fmt.Errorf("%w: %s has an active card; rotate it with its keys (RotateKeys), restore them from a backup, or reset them (ResetKeys) if every key is lost: %w", ErrAlreadyRegistered, me, err)
	case codes.PermissionDenied:
		if strings.Contains(status.Convert(err).Message(), "reset grant is required") {
			return fmt.Errorf("%w: %s published cards before; a new one is a reset (ResetKeys): %w", ErrResetGrantRequired, me, err)
		}
	}
	return err
}

// ResetKeys is the way back in after every key of the user is lost (or after the
// user revoked their cards): new keys, and a card that no earlier card endorses,
// published under grant, a one-time reset grant the app backend obtained for the user
// (IdentityService.IssueResetGrant) after re-authenticating them the way it does for
// an account recovery. The card service revokes the user's active card, if any, in the
// same step, and marks the new card as a reset, which contacts see as a key change.
//
// If this device still has a keystore, the new key becomes its current key and the
// older ones stay, so old messages still decrypt here; otherwise a new keystore is
// created. Messages sent to the lost keys cannot be read; restoring a backup
// (RestorePrivateKey) before or after the reset gets them back if one exists. Back the
// new keys up again afterwards.
func (c *Client) ResetKeys(ctx context.Context, grant string) (*Card, error) {
	if grant == "" {
		return nil, fmt.Errorf("%w: ResetKeys needs the grant", ErrResetGrantRequired)
	}
	if !c.HasPrivateKey() {
		return c.registerFresh(ctx, grant)
	}
	card, _, err := c.publishUnchainedCard(ctx, grant)
	return card, err
}

// RotateKeys replaces the user's keys: a new key pair, a card naming the current one as
// its predecessor and endorsed by its key. The old private key stays in the keystore so
// that messages sent to the old card still decrypt.
func (c *Client) RotateKeys(ctx context.Context) (*Card, error) {
	ks, old, oldID, err := c.current()
	if err != nil {
		return nil, err
	}
	me := ks.Identity()
	kp, err := e2ee.GenerateKeyPair(c.cfg.Suite)
	if err != nil {
		return nil, err
	}
	content, sig, err := e2ee.NewCard(kp, me, c.cfg.Now(), oldID)
	if err != nil {
		return nil, err
	}
	next, err := e2ee.ParseCard(content, sig)
	if err != nil {
		return nil, err
	}
	eContent, eSig, err := e2ee.Endorse(old, next)
	if err != nil {
		return nil, err
	}
	card, err := c.publishNewKeys(ctx, ks, kp, &cardv1.PublishCardRequest{Content: content, SelfSignature: sig, Endorsement: &cardv1.CardEndorsement{Content: eContent, Signature: eSig}})
	if err != nil {
		return nil, err
	}
	// The endorsement is this client's own, checked against the key it signed with.
	prev := &e2ee.Card{ID: oldID, Identity: me, SigningKey: old.SigningPublicKey()}
	if card.Endorsement != nil && e2ee.VerifyEndorsement(prev, card.Card, card.Endorsement.Content, card.Endorsement.Signature) == nil {
		out := *card
		out.Endorsed = true
		card = &out
	}
	return card, nil
}

// PublishCard publishes a card for fresh keys when the user has never had one: on a
// first start it is Register, and it also recovers a keystore whose card was never
// published. With an active card it refuses (ErrAlreadyRegistered: use RotateKeys);
// after the user's cards were revoked a new card is a reset and it refuses too
// (ErrResetGrantRequired: use ResetKeys).
func (c *Client) PublishCard(ctx context.Context) (*Card, error) {
	if !c.HasPrivateKey() {
		return c.Register(ctx)
	}
	card, me, err := c.publishUnchainedCard(ctx, "")
	if err != nil {
		return nil, publishError(err, me)
	}
	return card, nil
}

// publishUnchainedCard gives the user new keys whose card names no predecessor, with
// grant (a reset grant, or none), and publishes it as publishNewKeys does. me is the
// user's identity, once the keystore is read.
func (c *Client) publishUnchainedCard(ctx context.Context, grant string) (card *Card, me string, err error) {
	ks, _, _, err := c.current()
	if err != nil {
		return nil, "", err
	}
	me = ks.Identity()
	kp, content, sig, err := c.newUnchainedCard(me)
	if err != nil {
		return nil, me, err
	}
	card, err = c.publishNewKeys(ctx, ks, kp, &cardv1.PublishCardRequest{Content: content, SelfSignature: sig, ResetGrant: grant})
	return card, me, err
}

// publishNewKeys makes kp the keystore's current key and publishes its card (req). The
// new key is saved before its card is published, and the keystore goes back to what it
// was if publishing fails, so no published card ever lacks its private key.
func (c *Client) publishNewKeys(ctx context.Context, ks *keystore.Keystore, kp *e2ee.KeyPair, req *cardv1.PublishCardRequest) (*Card, error) {
	saved, err := os.ReadFile(c.cfg.KeystorePath)
	if err != nil {
		return nil, fmt.Errorf("sdk: read keystore: %w", err)
	}
	if err := ks.SetCurrent(kp, e2ee.CardID(req.GetContent())); err != nil {
		return nil, err
	}
	if err := ks.Save(); err != nil {
		return nil, errors.Join(fmt.Errorf("sdk: save keystore: %w", err), c.restoreKeystore(saved))
	}
	resp, err := c.cards.PublishCard(ctx, req)
	if err != nil {
		// errors.Join keeps err's gRPC status reachable (status.Code unwraps).
		if rerr := c.restoreKeystore(saved); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		return nil, err
	}
	return c.verify(ctx, resp.GetCard())
}

// restoreKeystore puts back the keystore file as it was, and reloads it.
func (c *Client) restoreKeystore(saved []byte) error {
	tmp := c.cfg.KeystorePath + ".restore"
	if err := os.WriteFile(tmp, saved, 0o600); err != nil {
		return fmt.Errorf("sdk: restore keystore: %w", err)
	}
	if err := os.Rename(tmp, c.cfg.KeystorePath); err != nil {
		return fmt.Errorf("sdk: restore keystore: %w", err)
	}
	c.mu.Lock()
	c.ks = nil
	c.mu.Unlock()
	return c.openKeystore()
}

// RevokeCard revokes the user's current card and keeps its keys, so messages sent to
// it still decrypt here. Until PublishCard, nobody can encrypt to the user.
func (c *Client) RevokeCard(ctx context.Context) error {
	_, _, id, err := c.current()
	if err != nil {
		return err
	}
	// Recorded first, so that this device's monitoring expects the revocation even if
	// the reply is lost.
	if err := c.updateKT(func(s *ktState) (bool, error) {
		if s.revokedHere(id) {
			return false, nil
		}
		s.RevokedHere = append(s.RevokedHere, id)
		return true, nil
	}); err != nil {
		return err
	}
	_, err = c.cards.RevokeCard(ctx, &cardv1.RevokeCardRequest{CardId: id})
	return err
}

// Unregister revokes the user's current card and deletes the local keystore (E3Kit's
// unregister). Messages to the revoked card can no longer be read on this device.
func (c *Client) Unregister(ctx context.Context) error {
	if err := c.RevokeCard(ctx); err != nil {
		return err
	}
	return c.Cleanup()
}
