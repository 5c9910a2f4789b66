// A key backup's keys and record (docs/wire-format.md, 10.4–10.5): Argon2id over the
// OPRF output, HKDF-SHA256 to an encryption key and an auth key bound to the binding,
// the record's version and the OPRF public key, and the AEAD of the KeyBundle
// (pkg/keybackup keys.go).
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { Aead, aeadOpen, aeadSeal } from "./aead.js";
import { argon2id } from "./argon2.js";
import { concat, copyBytes, labelled, randomBytes, u16, u32, u64 } from "./bytes.js";
import { KeyBackupError, KeyBackupErrorKind } from "./errors.js";
import { LabelBackupAuthKey, LabelBackupEncryptionKey, LabelBackupRecord } from "./labels.js";
import { ElementSize, OutputSize, encodeBinding, type Binding, type OprfOutput } from "./backup-oprf.js";

/** BackupAead is a record's AEAD; the values are those of umbra.backup.v1.BackupAead. */
export const BackupAead = { ChaCha20Poly1305: 1, AES256GCM: 2 } as const;
export type BackupAead = (typeof BackupAead)[keyof typeof BackupAead];

/** BackupArgon2id are a record's Argon2id parameters and salt. */
export interface BackupArgon2id {
  time: number;
  memoryKiB: number;
  threads: number;
  salt: Uint8Array;
}

/** The costs the SDK writes: RFC 9106's second recommendation for passwords, the least accepted for recovery keys. */
export const DefaultPasswordArgon2id = { time: 3, memoryKiB: 64 * 1024, threads: 4 } as const;
export const RecoveryArgon2id = { time: 1, memoryKiB: 8 * 1024, threads: 1 } as const;
/** MinPasswordCost is the least time × memory_kib a client accepts for a password record. */
export const MinPasswordCost = 3 * 64 * 1024;
export const MaxBundleSize = 1 << 20;

const invalid = (msg: string) => new KeyBackupError(KeyBackupErrorKind.Invalid, msg);

/** newArgon2id returns p with a fresh 32-byte salt. */
export function newArgon2id(p: { time: number; memoryKiB: number; threads: number }): BackupArgon2id {
  const kdf = { ...p, salt: randomBytes(32) };
  checkBackupArgon2id(kdf);
  return kdf;
}

/** checkBackupArgon2id throws Invalid when p is outside the bounds the service accepts. */
export function checkBackupArgon2id(p: BackupArgon2id): void {
  const within = (n: number, lo: number, hi: number) => Number.isInteger(n) && n >= lo && n <= hi;
  if (!within(p.time, 1, 16)) throw invalid(`Argon2id time ${p.time} is outside 1 to 16`);
  if (!within(p.memoryKiB, 8192, 4 << 20)) throw invalid(`Argon2id memory ${p.memoryKiB} KiB is outside 8,192 to 4,194,304`);
  if (!within(p.threads, 1, 64)) throw invalid(`Argon2id threads ${p.threads} is outside 1 to 64`);
  if (p.salt.length < 16 || p.salt.length > 64) throw invalid(`Argon2id salt is ${p.salt.length} bytes; want 16 to 64`);
}

/** checkPasswordCost throws WeakParams if p costs less than MinPasswordCost: call it before deriving for a password record. */
export function checkPasswordCost(p: { time: number; memoryKiB: number }): void {
  if (p.time * p.memoryKiB < MinPasswordCost) {
    throw new KeyBackupError(KeyBackupErrorKind.WeakParams, `Argon2id t=${p.time} m=${p.memoryKiB} KiB costs less than t × m = ${MinPasswordCost}: a password record is never written that cheap`);
  }
}

/** RecordParams are a record's parameters besides its binding and OPRF public key. */
export interface RecordParams {
  /** The record's version: the BACKUP evaluation's oprf_key_version, or the RESTORE one's. */
  version: bigint;
  aead: BackupAead;
  kdf: BackupArgon2id;
}

function checkParams(p: RecordParams): void {
  if (p.version <= 0n) throw invalid("record version 0; versions start at 1");
  if (p.aead !== BackupAead.ChaCha20Poly1305 && p.aead !== BackupAead.AES256GCM) throw invalid(`unknown AEAD ${p.aead}`);
  checkBackupArgon2id(p.kdf);
}

/** stretch returns Argon2id(password = the OPRF output, salt, t, m, p, 32 bytes): the costly step. */
export async function stretch(out: OprfOutput, kdf: BackupArgon2id): Promise<Uint8Array> {
  if (out.value.length !== OutputSize) throw invalid("no 64-byte OPRF output");
  checkBackupArgon2id(kdf);
  return argon2id(out.value, kdf.salt, kdf.time, kdf.memoryKiB, kdf.threads, 32);
}

/** BackupKeys are the keys derived for one record. */
export class BackupKeys {
  /** The 32-byte AEAD key. Secret: it never leaves the client. */
  readonly encryptionKey: Uint8Array;
  /** The 32-byte auth key: RestoreRequest.auth_key. Secret until presented. */
  readonly authKey: Uint8Array;
  readonly params: RecordParams;
  private readonly context: Uint8Array;

  private constructor(context: Uint8Array, params: RecordParams, encryptionKey: Uint8Array, authKey: Uint8Array) {
    this.context = context;
    this.params = params;
    this.encryptionKey = encryptionKey;
    this.authKey = authKey;
  }

  /**
   * derive stretches the OPRF output with Argon2id and derives, with HKDF-SHA256, the
   * encryption key and the auth key, each bound by context = binding ‖ u64(version) ‖ pkS.
   */
  static async derive(out: OprfOutput, p: RecordParams): Promise<BackupKeys> {
    checkParams(p);
    return BackupKeys.fromStretched(out, p, await stretch(out, p.kdf));
  }

  /** fromStretched is derive after the Argon2id step (run that in a Web Worker in a browser). */
  static fromStretched(out: OprfOutput, p: RecordParams, stretched: Uint8Array): BackupKeys {
    checkParams(p);
    if (out.publicKey.length !== ElementSize) throw invalid(`OPRF public key is ${out.publicKey.length} bytes; want 32`);
    const context = keyContext(out.binding, p.version, out.publicKey);
    const enc = hkdf(sha256, stretched, undefined, labelled(LabelBackupEncryptionKey, context), 32);
    const auth = hkdf(sha256, stretched, undefined, labelled(LabelBackupAuthKey, context), 32);
    return new BackupKeys(context, { ...p, kdf: { ...p.kdf, salt: copyBytes(p.kdf.salt) } }, enc, auth);
  }

  /** authKeyHash is SHA-256 of the auth key: BackupRecord.auth_key_hash. */
  get authKeyHash(): Uint8Array {
    return sha256(this.authKey);
  }

  /**
   * associatedData is the record's AEAD associated data: LABEL("umbra/v1/backup-record")
   * ‖ context ‖ u32(aead) ‖ u32(time) ‖ u32(memory_kib) ‖ u32(threads) ‖ u16(len(salt)) ‖ salt.
   */
  get associatedData(): Uint8Array {
    const k = this.params.kdf;
    return labelled(LabelBackupRecord, this.context, u32(this.params.aead), u32(k.time), u32(k.memoryKiB), u32(k.threads), u16(k.salt.length), k.salt);
  }

  /** seal encrypts bundle (1 byte to 1 MiB) with a fresh random nonce (or the one given: test vectors only). */
  seal(bundle: Uint8Array, nonce: Uint8Array = randomBytes(12)): { nonce: Uint8Array; ciphertext: Uint8Array } {
    if (bundle.length === 0 || bundle.length > MaxBundleSize) throw invalid(`key bundle is ${bundle.length} bytes; want 1 to ${MaxBundleSize}`);
    if (nonce.length !== 12) throw invalid(`nonce is ${nonce.length} bytes; want 12`);
    return { nonce, ciphertext: aeadSeal(this.aead(), this.encryptionKey, nonce, bundle, this.associatedData) };
  }

  /** open decrypts a record's ciphertext; one that does not authenticate is Decrypt. */
  open(nonce: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (nonce.length !== 12) throw invalid(`nonce is ${nonce.length} bytes; want 12`);
    if (ciphertext.length < 17 || ciphertext.length > MaxBundleSize + 16) throw invalid(`ciphertext is ${ciphertext.length} bytes; want 17 to ${MaxBundleSize + 16}`);
    const bundle = aeadOpen(this.aead(), this.encryptionKey, nonce, ciphertext, this.associatedData);
    if (bundle === undefined) {
      throw new KeyBackupError(KeyBackupErrorKind.Decrypt, "the key bundle does not authenticate under the derived key: a wrong secret, or the record was altered");
    }
    return bundle;
  }

  private aead(): Aead {
    return this.params.aead === BackupAead.ChaCha20Poly1305 ? Aead.CHACHA20_POLY1305 : Aead.AES_256_GCM;
  }
}

/** keyContext is str(app) ‖ str(identity) ‖ u32(slot) ‖ u64(version) ‖ public key. */
function keyContext(b: Binding, version: bigint, publicKey: Uint8Array): Uint8Array {
  return concat(encodeBinding(b), u64(version), publicKey);
}
