// Package kt is key transparency's client side and its formats: the card service's log
// of card events (an RFC 9162 Merkle tree), its map from identity to current card (a
// sparse Merkle tree over SHA-256), the checkpoints that commit to both (C2SP signed
// notes), and the verification of every proof a client, a monitor, a witness or an
// auditor is given. docs/key-transparency.md is the design and docs/wire-format.md
// section 13 the byte-level specification, with the test vectors that this package's
// tests check.
//
// The tree builders (AppendLog, UpdateMap, State.Append) are here too, over small storage
// interfaces, so that an auditor can recompute what the server computed; the card
// service stores their nodes in its own store.
//
// Witnesses cosign checkpoints (C2SP tlog-cosignature/v1: WitnessSigner), and a client
// requires k of the witnesses it names with a WitnessPolicy.
//
// Every verification error wraps one of ErrMalformed, ErrBadSignature,
// ErrUnknownLogKey, ErrInconsistent, ErrBadProof, ErrBadCosignature or ErrNotWitnessed.
package kt
