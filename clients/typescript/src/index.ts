// @umbra-e2ee/sdk: Umbra's end-to-end encryption for browsers and Node. The
// cryptographic core implements docs/wire-format.md byte for byte and passes the same
// test vectors as the Go SDK (pkg/e2ee, pkg/keybackup).
export * from "./errors.js";
export * from "./labels.js";
export { Suite, params as suiteParams, type SuiteParams } from "./hpke.js";
export { KeyPair, DefaultSuite } from "./keys.js";
export { checkSigningPublicKey, checkX25519PublicKey, checkMlKemEncapsulationKey, verifySignature } from "./pubkey.js";
export * from "./card.js";
export * from "./trust.js";
export { isUserIdentity, isGroupIdentity, isAppId, userIdentityProblem, groupIdentityProblem } from "./ident.js";
export { toHex, fromHex, constantTimeEqual, equalBytes } from "./bytes.js";
