// Key backup and restore (pkg/sdk backup.go): the keystore's KeyBundle encrypted under
// a key derived from the password (or a recovery key) through the backup service's
// oblivious PRF and Argon2id at the wire format's cost (§10), so the service never sees
// the password and cannot test guesses offline; ten wrong guesses erase the backup.

import {
  BackupService,
  BackupSlot as BackupSlotProto,
  EvaluationPurpose,
  RestoreFailureSchema,
  type Argon2idParams,
  type BackupInfo,
} from "../gen/umbra/backup/v1/backup_pb.js";
import { BackupKeys, DefaultPasswordArgon2id, RecoveryArgon2id, checkPasswordCost, newArgon2id, type BackupArgon2id, type RecordParams } from "../backup-keys.js";
import { Blinded, BackupSlot, type Binding, type OprfOutput } from "../backup-oprf.js";
import { equalBytes } from "../bytes.js";
import { parseKeyBundle } from "../keystore.js";
import { formatRecoveryKey, newRecoveryKey, parseRecoveryKey } from "../recovery-key.js";
import { Code, RpcError } from "../transport/errors.js";
import type { UmbraClient } from "./client.js";
import { UmbraErrorKind, WrongPasswordError, hasKind, umbraError, type BackupSlotName } from "./errors.js";

export type { BackupInfo };

/** A password as the user typed it: a string (normalised to NFC, as the Go CLI does) or bytes as given. */
export type Secret = string | Uint8Array;

function secretBytes(s: Secret): Uint8Array {
  return typeof s === "string" ? new TextEncoder().encode(s.normalize("NFC")) : s;
}

function slotName(slot: BackupSlot): BackupSlotName {
  return slot === BackupSlot.Recovery ? "recovery" : "password";
}

/** Turns the backup service's refusals into the client's errors. */
function backupError(slot: BackupSlot, err: unknown): unknown {
  if (!(err instanceof RpcError)) return err;
  switch (err.code) {
    case Code.PERMISSION_DENIED: {
      const f = err.detail(RestoreFailureSchema);
      if (f) return new WrongPasswordError(slotName(slot), f.remainingAttempts, f.erased, err);
      break;
    }
    case Code.ABORTED:
      return umbraError(UmbraErrorKind.BackupConflict, err.rawMessage, err);
    case Code.NOT_FOUND:
      return umbraError(UmbraErrorKind.NoBackup, err.rawMessage, err);
  }
  return err;
}

function kdfOf(k: Argon2idParams | undefined): BackupArgon2id {
  return { time: k?.time ?? 0, memoryKiB: k?.memoryKib ?? 0, threads: k?.threads ?? 0, salt: k?.salt ?? new Uint8Array(0) };
}

function sameKdf(a: Argon2idParams | undefined, b: Argon2idParams | undefined): boolean {
  const x = kdfOf(a);
  const y = kdfOf(b);
  return x.time === y.time && x.memoryKiB === y.memoryKiB && x.threads === y.threads && equalBytes(x.salt, y.salt);
}

/** The app, identity and slot of the caller; with keys here, they must be that identity's. */
async function binding(c: UmbraClient, slot: BackupSlot, signal?: AbortSignal): Promise<Binding> {
  const who = await c.whoAmI(signal);
  return { app: who.appId, identity: who.identity, slot };
}

/** Runs the OPRF with the service: blind, Evaluate, check the proof, finalise. */
async function evaluate(c: UmbraClient, b: Binding, secret: Uint8Array, purpose: EvaluationPurpose, signal?: AbortSignal): Promise<[OprfOutput, bigint]> {
  const bl = Blinded.blind(b, secret);
  let resp;
  try {
    resp = await c.transport.unary(BackupService.method.evaluate, { slot: b.slot as number as BackupSlotProto, purpose, blindedElement: bl.element }, { signal });
  } catch (e) {
    throw backupError(b.slot, e);
  }
  const out = bl.finalize(resp.evaluatedElement, resp.proof, resp.publicKey);
  if (resp.oprfKeyVersion === 0n) throw new Error("umbra: the backup service's evaluation names key version 0");
  return [out, resp.oprfKeyVersion];
}

/** Derives a record's keys, with the app's own Argon2id (a Web Worker) if it gave one. */
async function derive(c: UmbraClient, out: OprfOutput, p: RecordParams): Promise<BackupKeys> {
  const argon2 = c.cfg.argon2id;
  if (!argon2) return BackupKeys.derive(out, p);
  const stretched = await argon2(out.value, p.kdf.salt, p.kdf.time, p.kdf.memoryKiB, p.kdf.threads, 32);
  return BackupKeys.fromStretched(out, p, stretched);
}

/** The user's stored backups, one per slot that holds one. */
export async function backups(c: UmbraClient, signal?: AbortSignal): Promise<BackupInfo[]> {
  return (await c.transport.unary(BackupService.method.getBackupInfo, {}, { signal })).backups;
}

async function info(c: UmbraClient, slot: BackupSlot, signal?: AbortSignal): Promise<BackupInfo> {
  const b = (await backups(c, signal)).find((x) => x.slot === (slot as number));
  if (!b) throw umbraError(UmbraErrorKind.NoBackup, `in the ${slotName(slot)} slot`);
  return b;
}

/** Restores a slot with secret: the key bundle and the record's version. */
async function fetchBundle(c: UmbraClient, b: Binding, stored: BackupInfo, secret: Uint8Array, signal?: AbortSignal): Promise<[Uint8Array, bigint]> {
  // Before spending an attempt: a password is never stretched with less than the floor.
  if (b.slot === BackupSlot.Password) {
    try {
      checkPasswordCost(kdfOf(stored.kdf));
    } catch (e) {
      throw new Error(`umbra: refusing the stored backup: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  }
  const [out, version] = await evaluate(c, b, secret, EvaluationPurpose.RESTORE, signal);
  if (version !== stored.version) {
    throw umbraError(UmbraErrorKind.BackupConflict, `the ${slotName(b.slot)} slot went from version ${stored.version} to ${version}; try again`);
  }
  const keys = await derive(c, out, { version, aead: stored.aead as number as 1 | 2, kdf: kdfOf(stored.kdf) });
  let resp;
  try {
    resp = await c.transport.unary(BackupService.method.restore, { slot: b.slot as number as BackupSlotProto, authKey: keys.authKey, expectedVersion: version }, { signal });
  } catch (e) {
    throw backupError(b.slot, e);
  }
  if (resp.version !== version || resp.aead !== stored.aead || !sameKdf(resp.kdf, stored.kdf)) {
    throw umbraError(UmbraErrorKind.BackupTampered, `the record released is not the one described (version ${resp.version}, not ${version}, or other parameters)`);
  }
  try {
    return [keys.open(resp.nonce, resp.ciphertext), version];
  } catch (e) {
    throw umbraError(UmbraErrorKind.BackupTampered, e instanceof Error ? e.message : String(e), e);
  }
}

/** Encrypts bundle under secret into the slot, replacing version expected (0: the slot must be empty). */
async function store(c: UmbraClient, b: Binding, secret: Uint8Array, bundle: Uint8Array, expected: bigint, cost: { time: number; memoryKiB: number; threads: number }, signal?: AbortSignal): Promise<BackupInfo> {
  const [out, version] = await evaluate(c, b, secret, EvaluationPurpose.BACKUP, signal);
  const kdf = newArgon2id(cost);
  const keys = await derive(c, out, { version, aead: 1, kdf });
  const { nonce, ciphertext } = keys.seal(bundle);
  try {
    const resp = await c.transport.unary(
      BackupService.method.putBackup,
      {
        slot: b.slot as number as BackupSlotProto,
        record: {
          ciphertext,
          nonce,
          aead: 1,
          authKeyHash: keys.authKeyHash,
          kdf: { time: kdf.time, memoryKib: kdf.memoryKiB, threads: kdf.threads, salt: kdf.salt },
        },
        expectedVersion: expected,
        oprfKeyVersion: version,
      },
      { signal },
    );
    return resp.backup!;
  } catch (e) {
    throw backupError(b.slot, e);
  }
}

/** Checks that bundle holds every key of stored, of the same identity. */
function coversKeys(bundle: Uint8Array, stored: Uint8Array): void {
  const have = parseKeyBundle(bundle);
  let old;
  try {
    old = parseKeyBundle(stored);
  } catch (e) {
    throw umbraError(UmbraErrorKind.BackupTampered, `the stored key bundle does not parse: ${e instanceof Error ? e.message : String(e)}`, e);
  }
  if (old.identity !== have.identity) {
    throw umbraError(UmbraErrorKind.BackupMissesKeys, `the backup holds ${old.identity}'s keys, not ${have.identity}'s`);
  }
  for (const k of old.keys) {
    if (!have.keys.some((h) => equalBytes(h.cardId, k.cardId))) {
      throw umbraError(UmbraErrorKind.BackupMissesKeys, "the backup holds a key this device lacks; restore on this device first (into an empty keystore)");
    }
  }
}

/**
 * Backs up every key of the keystore under password. With a backup already, it first
 * proves the password against it (a wrong one counts as a guess) and replaces it only
 * if every key it holds is also here; after rotateKeys, call it again.
 */
export async function backupPrivateKey(c: UmbraClient, password: Secret, signal?: AbortSignal): Promise<BackupInfo> {
  const bundle = c.current().ks.keyBundle();
  const pw = secretBytes(password);
  const b = await binding(c, BackupSlot.Password, signal);
  let expected = 0n;
  try {
    const stored = await info(c, BackupSlot.Password, signal);
    const [old, version] = await fetchBundle(c, b, stored, pw, signal);
    coversKeys(bundle, old);
    expected = version;
  } catch (e) {
    if (!hasKind(e, UmbraErrorKind.NoBackup)) throw e;
  }
  return store(c, b, pw, bundle, expected, DefaultPasswordArgon2id, signal);
}

async function restoreInto(c: UmbraClient, slot: BackupSlot, secret: Uint8Array, signal?: AbortSignal): Promise<void> {
  if (c.hasPrivateKey) throw umbraError(UmbraErrorKind.KeysPresent, "restore only into an empty keystore (cleanup first, if its keys are backed up)");
  const b = await binding(c, slot, signal);
  const stored = await info(c, slot, signal);
  const [bundle] = await fetchBundle(c, b, stored, secret, signal);
  let ks;
  try {
    ks = await c.newKeystore(b.identity, bundle);
  } catch (e) {
    throw umbraError(UmbraErrorKind.BackupTampered, `the restored key bundle: ${e instanceof Error ? e.message : String(e)}`, e);
  }
  if (c.hasPrivateKey) throw umbraError(UmbraErrorKind.KeysPresent, "keys appeared during the restore");
  await c.saveKeystore(ks);
}

/** Restores every key of the password backup into this device's keystore, which must hold none. */
export function restorePrivateKey(c: UmbraClient, password: Secret, signal?: AbortSignal): Promise<void> {
  return restoreInto(c, BackupSlot.Password, secretBytes(password), signal);
}

/** Restores from the recovery key createRecoveryKey returned (any case, with or without dashes). */
export async function restoreFromRecoveryKey(c: UmbraClient, recoveryKey: string, signal?: AbortSignal): Promise<void> {
  return restoreInto(c, BackupSlot.Recovery, parseRecoveryKey(recoveryKey), signal);
}

/** Re-encrypts the password backup under newPassword; needs no keys on this device. */
export async function changePassword(c: UmbraClient, oldPassword: Secret, newPassword: Secret, signal?: AbortSignal): Promise<BackupInfo> {
  const b = await binding(c, BackupSlot.Password, signal);
  const stored = await info(c, BackupSlot.Password, signal);
  const [bundle, version] = await fetchBundle(c, b, stored, secretBytes(oldPassword), signal);
  return store(c, b, secretBytes(newPassword), bundle, version, DefaultPasswordArgon2id, signal);
}

/** Deletes a slot's backup. */
export async function deleteSlot(c: UmbraClient, slot: BackupSlot, signal?: AbortSignal): Promise<void> {
  try {
    await c.transport.unary(BackupService.method.deleteBackup, { slot: slot as number as BackupSlotProto }, { signal });
  } catch (e) {
    throw backupError(slot, e);
  }
}

/**
 * Makes a new recovery key, backs up every key under it in the recovery slot (replacing
 * the previous recovery backup), and returns it for the user to write down.
 */
export async function createRecoveryKey(c: UmbraClient, signal?: AbortSignal): Promise<string> {
  const bundle = c.current().ks.keyBundle();
  const b = await binding(c, BackupSlot.Recovery, signal);
  let expected = 0n;
  try {
    expected = (await info(c, BackupSlot.Recovery, signal)).version;
  } catch (e) {
    if (!hasKind(e, UmbraErrorKind.NoBackup)) throw e;
  }
  const k = newRecoveryKey();
  await store(c, b, k, bundle, expected, RecoveryArgon2id, signal);
  return formatRecoveryKey(k);
}

