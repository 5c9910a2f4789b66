package sdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/umbra-e2ee/umbra/pkg/argon2id"
	"github.com/umbra-e2ee/umbra/pkg/e2ee"
	"github.com/umbra-e2ee/umbra/pkg/grpcclient"
	"github.com/umbra-e2ee/umbra/pkg/keystore"
	"github.com/umbra-e2ee/umbra/pkg/tlsconf"
	cardv1 "github.com/umbra-e2ee/umbra/proto/umbra/card/v1"
	identityv1 "github.com/umbra-e2ee/umbra/proto/umbra/identity/v1"
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
	groups    groupStates            // epoch keys and members seen, per group (group_state.go)

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

// sameID reports whether two card ids are equal.
func sameID(a, b []byte) bool { return bytes.Equal(a, b) }
