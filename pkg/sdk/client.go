package sdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/umbra-e2ee/umbra/pkg/argon2id"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/keystore"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
)

// Errors the SDK returns besides the e2ee kinds (e2ee.ErrNotRecipient,
// e2ee.ErrBadSignature, e2ee.ErrWrongSender...) and gRPC statuses.
var (
	// ErrNoPrivateKey: the call needs the user's keys and the keystore has none
	// (Register, or restore them from a backup).
	ErrNoPrivateKey = errors.New("sdk: no private key in the keystore")
	// ErrAlreadyRegistered: Register on a user who has keys or an active card.
	ErrAlreadyRegistered = errors.New("sdk: already registered")
	// ErrNoCard: a recipient has no active card.
	ErrNoCard = errors.New("sdk: no active card")
	// ErrUntrustedCard: a card from the directory failed verification (its
	// self-signature, the service's counter-signature, or its identity).
	ErrUntrustedCard = errors.New("sdk: card failed verification")
	// ErrCardNotValidThen: a message signed with a card that was not the sender's
	// active card when the message says it was written.
	ErrCardNotValidThen = errors.New("sdk: sender card was not active when the message was written")
	// ErrResetGrantRequired: a new card that no earlier card of the user endorses (the
	// user published cards before, and they were revoked or their keys are lost) needs
	// a reset grant from the app backend: use ResetKeys.
	ErrResetGrantRequired = errors.New("sdk: a reset grant from the app backend is required")
)

// Config configures a Client.
type Config struct {
	// Addr is the gRPC address of Umbra (all services, or the gateway's gRPC peer).
	Addr string
	TLS  tlsconf.Client
	// Insecure allows plaintext beyond loopback.
	Insecure bool
	// Token returns access tokens for the user. Required.
	Token TokenFunc
	// KeystorePath is the local keystore file.
	KeystorePath string
	// Passphrase encrypts the keystore at rest. Leaving it empty is refused unless
	// NoPassphrase is set.
	Passphrase []byte
	// NoPassphrase stores the keystore unencrypted (file mode 0600 only). For tests and
	// devices that protect the file otherwise.
	NoPassphrase bool
	// Suite of new key pairs; zero means e2ee.DefaultSuite.
	Suite e2ee.Suite
	// ExcludeSelf leaves the sender's own card out of the recipients of Encrypt. By
	// default it is in, so the user's other devices can read what this one sent.
	ExcludeSelf bool
	// ClockSkew is the tolerance when checking a message's or epoch commit's
	// created_at against its signer card's lifetime (docs/wire-format.md, 6.3); zero
	// means DefaultClockSkew.
	ClockSkew time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
	// DialOptions are added to the connection's own (extra interceptors, for example).
	DialOptions []grpc.DialOption

	// KeyChangePolicy is what the client does when a contact's card does not chain to
	// the one it pinned (TrustedCards): refuse (the default) or warn and go on. A
	// contact the user verified is refused either way.
	KeyChangePolicy KeyChangePolicy
	// OnKeyChange, if set, is called for every key change the client meets, under
	// either policy: for example to tell the user.
	OnKeyChange func(*KeyChangedError)
	// ServiceKeys are card service keys the app ships with (GetServiceKey's key ids
	// and public keys, every one it lists when the app is built). With them the client
	// trusts no other service key except through rotations signed by one of them; without
	// them it pins the keys the service lists on first use.
	ServiceKeys []ServiceKeyPin
	// TrustStorePath is the pin file (docs/wire-format.md, 5.7); empty means
	// KeystorePath + ".trust".
	TrustStorePath string

	// Key transparency (docs/key-transparency.md, "Clients"): every card lookup is
	// proved by the card service's log and map against a checkpoint consistent with
	// the last one this client kept; there is no setting that turns it off.
	//
	// LogKeys are the card service's log keys the app ships with: signed-note
	// verifier keys, as GetLogKey and `umbra card log-key` give them. Without them the
	// client pins the key the service names on first use. Checkpoints signed by no
	// trusted key are refused (ErrUnknownLogKey).
	LogKeys []string
	// KeyTransparencyWait bounds how long a lookup waits for a checkpoint that holds a
	// card published after the latest one; 0 means DefaultKeyTransparencyWait.
	KeyTransparencyWait time.Duration
	// MonitorInterval, if positive, makes the client check its own identity in the
	// log (Monitor) when it starts and then at this interval, until Close.
	MonitorInterval time.Duration
	// OnKeyTransparencyAlert, if set, is called with what monitoring finds: each
	// *UnexpectedCardError, and a check of the log that failed (ErrLogInconsistent,
	// ErrUnprovedCard, ErrUnknownLogKey).
	OnKeyTransparencyAlert func(error)
	// KeyTransparencyStatePath is the key transparency state file
	// (docs/wire-format.md, 13.10); empty means KeystorePath + ".kt".
	KeyTransparencyStatePath string
	// Witnesses and WitnessQuorum require cosigned checkpoints (docs/key-transparency.md,
	// "Witnesses"): a checkpoint counts only with valid cosignatures of at least
	// WitnessQuorum of these witnesses (zero means all of them). None: no witness is
	// required. See witness.go.
	Witnesses     []Witness
	WitnessQuorum int

	// keystoreArgon2id, when set, is the Argon2id cost of a new keystore's passphrase
	// in place of argon2id.Default. Test only: the package's tests set it
	// (CheapKeystore, in an _test.go file) so that devices whose tests are not about
	// Argon2id start quickly; no exported field, flag or setting reaches it.
	keystoreArgon2id argon2id.Params
	// withoutKT, when set, makes lookups use SearchCards without proofs. Test only
	// (WithoutKeyTransparency, in an _test.go file): the pinning tests check the pins
	// on their own, as against an operator who put the cards it forged in its log
	// (it holds the log key); no exported field, flag or setting reaches it.
	withoutKT bool
}

// DefaultClockSkew is how far a signed created_at may lie outside its signer card's
// lifetime as the card service reports it: before published_at, or after
// superseded_at or revoked_at. It is the card service's own tolerance for a card's
// created_at (card.DefaultClockSkew), and what docs/wire-format.md (6.3) states.
const DefaultClockSkew = 5 * time.Minute

// Client is one user's view of Umbra.
type Client struct {
	cfg      Config
	conn     *grpc.ClientConn
	identity identityv1.IdentityServiceClient
	cards    cardv1.CardServiceClient
	tok      *tokens

	mu        sync.Mutex
	ks        *keystore.Keystore     // nil until Register or a keystore on disk
	me        string                 // the user's identity, once known
	cardCache map[string]*cardRecord // by card id
	groups    groupStates            // epoch keys and members seen, per group (group.go)

	pinMu sync.Mutex // guards pins, and orders writes of the pin file
	pins  *pinFile   // the pin file as last read or written (pins.go)

	app         string             // the user's app, for map keys (kt.go), once known
	ktMu        sync.Mutex         // orders writes of the key transparency state file
	stopMonitor context.CancelFunc // ends the background monitoring, if any
	monitorDone chan struct{}
}

// New connects to Umbra and opens the keystore if it exists.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Token == nil {
		return nil, errors.New("sdk: Config.Token is required")
	}
	if cfg.KeystorePath == "" {
		return nil, errors.New("sdk: Config.KeystorePath is required")
	}
	if len(cfg.Passphrase) == 0 && !cfg.NoPassphrase {
		return nil, errors.New("sdk: a keystore passphrase is required (or set NoPassphrase explicitly)")
	}
	if cfg.Suite == 0 {
		cfg.Suite = e2ee.DefaultSuite
	}
	if cfg.ClockSkew == 0 {
		cfg.ClockSkew = DefaultClockSkew
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := checkLogKeys(cfg.LogKeys); err != nil {
		return nil, err
	}
	t := &tokens{fetch: cfg.Token, now: cfg.Now}
	conn, err := grpcclient.Dial(grpcclient.Config{Addr: cfg.Addr, TLS: cfg.TLS, Insecure: cfg.Insecure}, append(t.interceptors(), cfg.DialOptions...)...)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:       cfg,
		conn:      conn,
		identity:  identityv1.NewIdentityServiceClient(conn),
		cards:     cardv1.NewCardServiceClient(conn),
		tok:       t,
		cardCache: map[string]*cardRecord{},
	}
	if err := c.openKeystore(); err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.loadPins(); err != nil {
		conn.Close()
		return nil, err
	}
	if cfg.MonitorInterval > 0 {
		c.startMonitor(cfg.MonitorInterval)
	}
	return c, nil
}

// Close stops the background monitoring, if any, and releases the connection.
func (c *Client) Close() error {
	if c.stopMonitor != nil {
		c.stopMonitor()
		<-c.monitorDone
	}
	return c.conn.Close()
}

// Conn is the client's gRPC connection, with the token attached to every call, for the
// services this package does not wrap yet.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

func (c *Client) passphrase() []byte {
	if c.cfg.NoPassphrase {
		return nil
	}
	return c.cfg.Passphrase
}

func (c *Client) openKeystore() error {
	ks, err := keystore.Open(c.cfg.KeystorePath, c.passphrase())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sdk: open keystore: %w", err)
	}
	c.ks, c.me = ks, ks.Identity()
	return nil
}

// HasPrivateKey reports whether the keystore holds the user's current key.
func (c *Client) HasPrivateKey() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ks != nil
}

// Identity returns the user's identity, asking the identity service if the keystore
// does not know it yet.
func (c *Client) Identity(ctx context.Context) (string, error) {
	c.mu.Lock()
	me := c.me
	c.mu.Unlock()
	if me != "" {
		return me, nil
	}
	who, err := c.identity.WhoAmI(ctx, &identityv1.WhoAmIRequest{})
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.me = who.GetIdentity()
	c.mu.Unlock()
	return who.GetIdentity(), nil
}

// Cleanup deletes the local keystore. The published card stays: another device, or a
// restore from backup, can still use it.
func (c *Client) Cleanup() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ks = nil
	if err := keystore.Remove(c.cfg.KeystorePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sdk: remove keystore: %w", err)
	}
	return nil
}

// current returns the keystore and its current key, or ErrNoPrivateKey.
func (c *Client) current() (*keystore.Keystore, *e2ee.KeyPair, []byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ks == nil {
		return nil, nil, nil, ErrNoPrivateKey
	}
	kp, id := c.ks.Current()
	if kp == nil {
		return nil, nil, nil, ErrNoPrivateKey
	}
	return c.ks, kp, id, nil
}

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

// sameID reports whether two card ids are equal.
func sameID(a, b []byte) bool { return bytes.Equal(a, b) }
