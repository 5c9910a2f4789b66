package e2ee

import (
	"errors"

	"github.com/umbra-e2ee/umbra/pkg/internal/kinderr"
)

// The kinds of failure. Errors returned by this package wrap exactly one of them, with
// a message that says what was wrong; test with errors.Is.
var (
	// ErrMalformed: bytes that do not parse, are truncated, are not in canonical
	// encoding, carry unknown fields, or break a size or shape rule.
	ErrMalformed = errors.New("malformed")
	// ErrUnknownSuite: a suite or AEAD this version does not know.
	ErrUnknownSuite = errors.New("unknown suite")
	// ErrBadSignature: a signature that does not verify.
	ErrBadSignature = errors.New("bad signature")
	// ErrNotRecipient: a message with no stanza for any card whose key we hold.
	ErrNotRecipient = errors.New("not a recipient")
	// ErrWrongSender: a message signed by a card that is not the expected sender's.
	ErrWrongSender = errors.New("wrong sender")
	// ErrDecrypt: a ciphertext that does not authenticate under the key it should.
	ErrDecrypt = errors.New("decryption failed")
	// ErrTooLarge: input over a size limit.
	ErrTooLarge = errors.New("too large")
	// ErrPassphrase: a keystore passphrase that is wrong, missing, or given for a
	// keystore that has none.
	ErrPassphrase = errors.New("wrong passphrase")

	// The kinds particular to groups (a truncated group message or commit is
	// ErrMalformed, a forged one ErrBadSignature):

	// ErrNotMember: a key wrapped to a card that is not ours, or a commit or message
	// signed by a card that does not belong to a member of the group.
	ErrNotMember = errors.New("not a member")
	// ErrWrongEpoch: a commit or message of another epoch than the one expected, or
	// one whose epoch key we do not hold.
	ErrWrongEpoch = errors.New("wrong epoch")
	// ErrWrongGroup: a commit or message of another group than the one expected.
	ErrWrongGroup = errors.New("wrong group")

	// The kinds particular to membership chains (a truncated statement is ErrMalformed,
	// a forged one ErrBadSignature, one by another card than it names ErrWrongSender):

	// ErrBrokenChain: a membership statement that does not follow the head of the chain
	// it is applied to: one missing before it, repeated, reordered, or a chain that
	// differs from the one verified before.
	ErrBrokenChain = errors.New("broken membership chain")
	// ErrNotAuthorized: a membership statement whose signer may not make its change: a
	// member who is not an admin adding or removing, an admin setting roles or removing
	// an admin, anyone removing the owner, an invitee accepting an invitation it does
	// not have, the group service adding anyone.
	ErrNotAuthorized = errors.New("signer not authorized")
	// ErrInvalidChange: a membership statement whose change does not fit the membership
	// it follows: adding a member or a banned identity, removing a non-member, lifting a
	// ban that is not there, accepting an expired invitation.
	ErrInvalidChange = errors.New("invalid membership change")
	// ErrUnknownKind: a membership statement of a kind this version does not know.
	ErrUnknownKind = errors.New("unknown statement kind")
)

// Error is a failure of one kind, with what was being done and why. Its fields are
// Kind (one of the kinds above) and Msg; it reads "e2ee: <kind>: <msg>", and Unwrap
// returns the kind.
type Error = kinderr.Error[kinderr.E2EE]

var errorf = kinderr.Errorf[kinderr.E2EE]
