// The body AEADs (docs/wire-format.md section 3, "Body AEADs"): ChaCha20-Poly1305 and
// AES-256-GCM, 32-byte key, 12-byte nonce, 16-byte tag appended; on Node's crypto
// module where it passed its self-test (platform.ts), from @noble/ciphers otherwise.
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { gcm } from "@noble/ciphers/aes.js";
import { Aead } from "./gen/umbra/envelope/v1/envelope_pb.js";
import { E2eeErrorKind, e2eeError } from "./errors.js";
import { platformAead } from "./platform.js";

export { Aead };

/** DefaultAead is the body AEAD unless asked otherwise. */
export const DefaultAead = Aead.CHACHA20_POLY1305;

/** checkAead throws UnknownSuite unless aead is ChaCha20-Poly1305 or AES-256-GCM. */
export function checkAead(aead: Aead): void {
  if (aead !== Aead.CHACHA20_POLY1305 && aead !== Aead.AES_256_GCM) throw e2eeError(E2eeErrorKind.UnknownSuite, `body AEAD ${aead}`);
}

/**
 * aeadSeal encrypts plaintext under key and nonce with aad, appending the tag. With
 * output (plaintext.length + 16 bytes), the ciphertext is written there.
 */
export function aeadSeal(aead: Aead, key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array, output?: Uint8Array): Uint8Array {
  checkAead(aead);
  const p = platformAead(aead === Aead.CHACHA20_POLY1305 ? "chacha20-poly1305" : "aes-256-gcm");
  if (p !== undefined) return p.seal(key, nonce, plaintext, aad, output);
  if (aead === Aead.CHACHA20_POLY1305) return chacha20poly1305(key, nonce, aad).encrypt(plaintext, output);
  const ct = gcm(key, nonce, aad).encrypt(plaintext);
  if (output === undefined) return ct;
  output.set(ct);
  return output;
}

/** aeadOpen decrypts and authenticates; it returns undefined if the ciphertext does not authenticate. */
export function aeadOpen(aead: Aead, key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, aad: Uint8Array): Uint8Array | undefined {
  checkAead(aead);
  const p = platformAead(aead === Aead.CHACHA20_POLY1305 ? "chacha20-poly1305" : "aes-256-gcm");
  try {
    if (p !== undefined) return p.open(key, nonce, ciphertext, aad);
    return aead === Aead.CHACHA20_POLY1305 ? chacha20poly1305(key, nonce, aad).decrypt(ciphertext) : gcm(key, nonce, aad).decrypt(ciphertext);
  } catch {
    return undefined;
  }
}
