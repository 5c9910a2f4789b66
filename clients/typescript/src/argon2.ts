// Argon2id (RFC 9106, version 0x13, no secret, no associated data) from hash-wasm. In a
// browser, call the SDK's stretching from a Web Worker so the page stays responsive:
// one derivation at the default cost takes 64 MiB and a few hundred milliseconds.
import { argon2id as hashWasmArgon2id } from "hash-wasm";

/** argon2id returns the 32-byte (or tagLength-byte) Argon2id tag of password under salt and the cost t, m (KiB), p. */
export async function argon2id(password: Uint8Array, salt: Uint8Array, time: number, memoryKiB: number, threads: number, tagLength = 32): Promise<Uint8Array> {
  return hashWasmArgon2id({
    password,
    salt,
    iterations: time,
    memorySize: memoryKiB,
    parallelism: threads,
    hashLength: tagLength,
    outputType: "binary",
  });
}
