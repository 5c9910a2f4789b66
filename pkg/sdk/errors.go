package sdk

import "errors"

// The errors the SDK returns, by topic, besides the e2ee kinds (e2ee.ErrNotRecipient,
// e2ee.ErrBadSignature, e2ee.ErrWrongSender...) and gRPC statuses; test with errors.Is.
var (
	// Keys, cards and messages.

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

	// Trust in contacts' cards (trust.go).

	// ErrKeyChanged: a contact's card does not chain to the card this client pinned
	// (a reset, an unendorsed or badly endorsed rotation, or a card the server made
	// up). The error is a *KeyChangedError, which says what changed.
	ErrKeyChanged = errors.New("sdk: contact's key changed")
	// ErrUnknownServiceKey: a card signed by a card service key that does not chain,
	// through rotations signed by the key each replaced, to a service key this client
	// pinned.
	ErrUnknownServiceKey = errors.New("sdk: unknown card service key")
	// ErrBadEndorsement: a rotation endorsement that is missing or does not verify
	// (VerifyEndorsement). In TrustedCards the same failure is a key change whose
	// KeyChangedError wraps both.
	ErrBadEndorsement = errors.New("sdk: endorsement does not verify")
	// ErrNoKeyChange: AcceptKeyChange found no key change of the contact to accept.
	ErrNoKeyChange = errors.New("sdk: no key change to accept")

	// Key transparency (kt.go, monitor.go). They wrap pkg/kt's kinds (kt.ErrBadProof,
	// kt.ErrMalformed, kt.ErrBadSignature, kt.ErrInconsistent, kt.ErrUnknownLogKey),
	// which errors.Is also finds.

	// ErrUnknownLogKey: a checkpoint signed by no log key this client trusts (the key
	// it pinned on first use, or Config.LogKeys): a server that swapped its log key,
	// or a different log. Nothing from that checkpoint is used.
	ErrUnknownLogKey = errors.New("sdk: checkpoint signed by an unknown key transparency log key")
	// ErrUnprovedCard: a lookup the key transparency log does not prove: a card
	// served with no proof or a proof that does not verify, a card that is not the
	// one the map names, a checkpoint whose signature does not verify. Nothing is
	// encrypted to such a card.
	ErrUnprovedCard = errors.New("sdk: card not proved by the key transparency log")
	// ErrLogInconsistent: the server's checkpoint is not consistent with the one this
	// client kept: the log was rewritten or forked (a split view). The error is a
	// *LogInconsistentError, which carries both signed checkpoints as evidence.
	ErrLogInconsistent = errors.New("sdk: key transparency checkpoint inconsistent with the one this client kept")
	// ErrNotYetInLog: the directory has a card (or a change of one) that no
	// checkpoint holds yet, and none did within Config.KeyTransparencyWait. The card
	// cannot be proved, so it is not used; try again later.
	ErrNotYetInLog = errors.New("sdk: card not yet in the key transparency log")
	// ErrUnexpectedCard: the key transparency log shows, for the user's own identity,
	// something this device did not do. The error is an *UnexpectedCardError.
	ErrUnexpectedCard = errors.New("sdk: key transparency shows an unexpected card event for this user")

	// Groups, besides the e2ee kinds (e2ee.ErrNotMember, e2ee.ErrWrongEpoch,
	// e2ee.ErrWrongGroup, e2ee.ErrBadSignature...).

	// ErrEncryptionOff: an encrypted message for a group whose encryption mode is OFF.
	ErrEncryptionOff = errors.New("sdk: the group's encryption is off")
	// ErrRotationFailed: the group needed a new epoch and none could be committed in
	// a few attempts (members kept changing, or the commits kept losing races).
	ErrRotationFailed = errors.New("sdk: could not commit a new epoch")
	// ErrMembershipChain: the group's membership chain, as the service served it, does not
	// verify. The error also wraps the e2ee kind that names what failed:
	// e2ee.ErrBadSignature (a forged statement), e2ee.ErrNotAuthorized (a signer without
	// the role, or the service adding someone), e2ee.ErrBrokenChain (a statement missing,
	// repeated or reordered, or a chain that contradicts the one verified before),
	// e2ee.ErrUnknownKind, e2ee.ErrInvalidChange, e2ee.ErrWrongSender, or
	// ErrCardNotValidThen (a statement dated outside its signer card's lifetime).
	ErrMembershipChain = errors.New("sdk: the group's membership chain does not verify")

	// Key backups. A wrong password or recovery key is a *WrongPasswordError, which
	// matches ErrWrongPassword (and ErrBackupErased when it cost the backup).

	// ErrWrongPassword: the service refused the auth key derived from the password or
	// recovery key. Test with errors.As for a *WrongPasswordError to learn how many
	// attempts remain.
	ErrWrongPassword = errors.New("sdk: wrong backup password")
	// ErrBackupErased: the slot's attempts ran out and the service erased the backup.
	ErrBackupErased = errors.New("sdk: the backup was erased after too many wrong passwords")
	// ErrNoBackup: the slot holds no backup.
	ErrNoBackup = errors.New("sdk: no backup")
	// ErrBackupConflict: the backup changed (another device wrote it, or an evaluation
	// was made for another version) between two steps; nothing was overwritten. Read
	// it again (restore) before replacing it.
	ErrBackupConflict = errors.New("sdk: the backup changed meanwhile")
	// ErrBackupTampered: the service released a record, for the right auth key, that
	// does not decrypt: it was altered. It also matches keybackup.ErrDecrypt.
	ErrBackupTampered = errors.New("sdk: the restored backup does not authenticate")
	// ErrKeysPresent: a restore into a keystore that already holds keys.
	ErrKeysPresent = errors.New("sdk: the keystore already holds keys")
	// ErrBackupMissesKeys: the stored backup holds keys this device does not have (another
	// device rotated and backed up since): restore on this device first.
	ErrBackupMissesKeys = errors.New("sdk: the backup holds keys this device lacks")

	// Sending many messages (sender.go).

	// ErrSenderClosed: Send on a Sender that was closed, or whose context ended.
	ErrSenderClosed = errors.New("sdk: sender closed")
)
