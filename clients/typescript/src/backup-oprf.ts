// The client side of a key backup's OPRF (docs/wire-format.md, 10.1–10.3): RFC 9497
// verifiable mode, ristretto255-SHA512, from @noble/curves (pkg/keybackup oprf.go).
import { ristretto255, ristretto255_hasher, ristretto255_oprf } from "@noble/curves/ed25519.js";
import { bytesToNumberLE } from "@noble/curves/utils.js";
import { concat, copyBytes, labelled, str, u32, utf8Bytes } from "./bytes.js";
import { KeyBackupErrorKind, KeyBackupError } from "./errors.js";
import { LabelBackupOPRFInput } from "./labels.js";

/** Sizes of the OPRF's values. */
export const ElementSize = 32;
export const ProofSize = 64;
export const OutputSize = 64;
export const MaxSecretSize = 1024;

/** BackupSlot is a backup slot; the values are those of umbra.backup.v1.BackupSlot. */
export const BackupSlot = { Password: 1, Recovery: 2 } as const;
export type BackupSlot = (typeof BackupSlot)[keyof typeof BackupSlot];

/** Binding says whose secret is hardened and for which slot. */
export interface Binding {
  /** The app id (WhoAmI's app_id). */
  readonly app: string;
  readonly identity: string;
  readonly slot: BackupSlot;
}

const invalid = (msg: string) => new KeyBackupError(KeyBackupErrorKind.Invalid, msg);

function checkBinding(b: Binding): void {
  const app = utf8Bytes(b.app).length, id = utf8Bytes(b.identity).length;
  if (app === 0 || app > 255) throw invalid("app id must be 1 to 255 bytes of UTF-8");
  if (id === 0 || id > 255) throw invalid("identity must be 1 to 255 bytes of UTF-8");
  if (b.slot !== BackupSlot.Password && b.slot !== BackupSlot.Recovery) throw invalid(`unknown backup slot ${b.slot}`);
}

/** encodeBinding is str(app) ‖ str(identity) ‖ u32(slot). */
export function encodeBinding(b: Binding): Uint8Array {
  checkBinding(b);
  return concat(str(b.app), str(b.identity), u32(b.slot));
}

/** oprfInput is LABEL("umbra/v1/backup-oprf-input") ‖ binding ‖ u32(len(secret)) ‖ secret: as secret as the secret. */
export function oprfInput(b: Binding, secret: Uint8Array): Uint8Array {
  const binding = encodeBinding(b);
  if (secret.length === 0 || secret.length > MaxSecretSize) throw invalid(`the secret is ${secret.length} bytes; want 1 to ${MaxSecretSize}`);
  return labelled(LabelBackupOPRFInput, binding, u32(secret.length), secret);
}

/** The DST of HashToGroup in verifiable mode: "HashToGroup-" ‖ "OPRFV1-" ‖ 0x01 ‖ "-ristretto255-SHA512". */
const hashToGroupDST = concat(utf8Bytes("HashToGroup-OPRFV1-"), Uint8Array.of(1), utf8Bytes("-ristretto255-SHA512"));

/** Output is a finalised OPRF output and what it is bound to. */
export interface OprfOutput {
  readonly binding: Binding;
  /** The service's OPRF public key the evaluation was proved for. */
  readonly publicKey: Uint8Array;
  /** The 64-byte output. Secret: it never leaves the client. */
  readonly value: Uint8Array;
}

/** Blinded is a blinded OPRF input waiting for the service's evaluation: keep it in memory only, and use it once. */
export class Blinded {
  readonly binding: Binding;
  private readonly input: Uint8Array;
  private readonly blind: Uint8Array;
  /** The blinded element, 32 bytes: EvaluateRequest.blinded_element. */
  readonly element: Uint8Array;

  private constructor(binding: Binding, input: Uint8Array, blind: Uint8Array, element: Uint8Array) {
    this.binding = binding;
    this.input = input;
    this.blind = blind;
    this.element = element;
  }

  /**
   * blind blinds secret under binding with a fresh random scalar (RFC 9497 Blind). With
   * blindScalar (32 bytes, little-endian; test vectors only) it uses that scalar instead.
   */
  static blind(binding: Binding, secret: Uint8Array, blindScalar?: Uint8Array): Blinded {
    const input = oprfInput(binding, secret);
    if (blindScalar === undefined) {
      const { blind, blinded } = ristretto255_oprf.voprf.blind(input);
      return new Blinded(binding, input, blind, blinded);
    }
    const r = bytesToNumberLE(blindScalar);
    if (blindScalar.length !== 32 || r === 0n || r >= ristretto255.Point.Fn.ORDER) throw invalid("blind is not a non-zero canonical scalar");
    const element = ristretto255_hasher.hashToCurve(input, { DST: hashToGroupDST }).multiply(r).toBytes();
    return new Blinded(binding, input, copyBytes(blindScalar), element);
  }

  /**
   * finalize checks the service's evaluation (evaluated element, proof, public key)
   * and unblinds it to the OPRF output: Invalid for malformed values, BadProof for an
   * evaluation not proved for publicKey.
   */
  finalize(evaluated: Uint8Array, proof: Uint8Array, publicKey: Uint8Array): OprfOutput {
    if (publicKey.length !== ElementSize) throw invalid(`OPRF public key is ${publicKey.length} bytes; want 32`);
    checkElement("OPRF public key", publicKey);
    if (evaluated.length !== ElementSize) throw invalid(`evaluated element is ${evaluated.length} bytes; want 32`);
    checkElement("evaluated element", evaluated);
    if (proof.length !== ProofSize) throw invalid(`proof is ${proof.length} bytes; want 64`);
    const order = ristretto255.Point.Fn.ORDER;
    if (bytesToNumberLE(proof.subarray(0, 32)) >= order || bytesToNumberLE(proof.subarray(32)) >= order) throw invalid("proof holds a scalar that is not canonical");
    let value: Uint8Array;
    try {
      value = ristretto255_oprf.voprf.finalize(this.input, this.blind, evaluated, this.element, publicKey, proof);
    } catch (err) {
      throw new KeyBackupError(KeyBackupErrorKind.BadProof, "the service's evaluation is not proved for its public key", { cause: err });
    }
    return { binding: this.binding, publicKey: copyBytes(publicKey), value };
  }
}

/** checkElement refuses bytes that are not a canonical ristretto255 element other than the identity. */
function checkElement(what: string, b: Uint8Array): void {
  let p;
  try {
    p = ristretto255.Point.fromBytes(b);
  } catch {
    throw invalid(`${what} is not a ristretto255 element`);
  }
  if (p.is0()) throw invalid(`${what} is the identity`);
}
