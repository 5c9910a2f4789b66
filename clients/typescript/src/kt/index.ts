// Key transparency's client side (docs/key-transparency.md; formats in
// docs/wire-format.md section 13): checkpoints (C2SP signed notes, Ed25519), RFC 9162
// inclusion and consistency proofs, map proofs of presence and absence, and lookups,
// verified as pkg/kt verifies them, with its error kinds (KtError).
export { KtError, KtErrorKind, isKtError } from "./errors.js";
export { HashSize, MapExtension, MaxCheckpointSize, checkpointText, openCheckpoint, parseCheckpoint, sameCheckpoint, type Checkpoint, type SignedCheckpoint } from "./checkpoint.js";
export { keyHash, openNote, parseNote, parseVerifierKey, validKeyName, verifierKey, type NoteSignature, type NoteLine, type NoteVerifier, type OpenedNote, type ParsedNote } from "./note.js";
export { MaxProofHashes, emptyLogRoot, leafHash, logDepth, nodeHash, packHashes, rootFromInclusionProof, unpackHashes, verifyConsistency, verifyConsistencyProof, verifyInclusion } from "./log.js";
export { LabelKtMapKey, MaxMapDepth, emptyMapHash, mapKey, mapLeafHash, mapNodeHash, valueHash, verifyMapProof } from "./map.js";
export { KtVersion, MaxLeafSize, encodeLeaf, encodeMapValue, nextMapValue, parseLeaf, parseMapValue } from "./formats.js";
export { verifyCardPublication, verifyLookup, type Lookup } from "./lookup.js";
export {
  ForkError,
  MaxCosignatureSkewMs,
  NotWitnessedError,
  WitnessPolicy,
  cosignedMessage,
  cosignerKeyHash,
  mergeCosignatures,
  parseWitnessKey,
  verifyCosignature,
  witnessKeyString,
  type Cosignature,
  type WitnessKey,
} from "./cosignature.js";
