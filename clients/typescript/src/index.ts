// @umbra-e2ee/sdk: Umbra's end-to-end encryption for browsers and Node. The
// cryptographic core implements docs/wire-format.md byte for byte and passes the same
// test vectors as the Go SDK (pkg/e2ee, pkg/keybackup).
export * from "./errors.js";
export * from "./labels.js";
export { Suite, params as suiteParams, type SuiteParams } from "./hpke.js";
export { Aead, DefaultAead } from "./aead.js";
export { KeyPair, DefaultSuite } from "./keys.js";
export { checkSigningPublicKey, checkX25519PublicKey, checkMlKemEncapsulationKey, verifySignature } from "./pubkey.js";
export * from "./card.js";
export * from "./trust.js";
export {
  encrypt,
  decrypt,
  inspectEnvelope,
  keyWrapInfo,
  MaxRecipients,
  MaxEnvelopeHeaderSize,
  MaxEnvelopeSize,
  MaxPlaintextSize,
  type EncryptOptions,
  type EnvelopeInfo,
  type KeyLookup,
} from "./envelope.js";
export * from "./keystore.js";
export * from "./group-epoch.js";
export * from "./group-message.js";
export * from "./group-membership.js";
export * from "./backup-oprf.js";
export * from "./backup-keys.js";
export * from "./recovery-key.js";
export { argon2id } from "./argon2.js";
export { isUserIdentity, isGroupIdentity, isAppId, userIdentityProblem, groupIdentityProblem } from "./ident.js";
export { toHex, fromHex, constantTimeEqual, equalBytes, unixSeconds } from "./bytes.js";
export * from "./kt/index.js";
export * from "./client/index.js";
