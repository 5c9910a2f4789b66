// The key pairs and cards of docs/wire-format.md section 9, loaded from
// pkg/e2ee/testdata/vectors.json (the file the Go tests check).
import { KeyPair } from "../src/keys.js";
import { parseCard, type Card } from "../src/card.js";
import { Suite } from "../src/hpke.js";
import { h, repoJSON } from "./helpers.js";

export const v = repoJSON("pkg/e2ee/testdata/vectors.json");

export const suiteOf = (name: string): Suite => (name === "SUITE_MLKEM768_X25519" ? Suite.MLKEM768_X25519 : Suite.X25519);

/** keyPairs are the vector key pairs by name, rebuilt from their stated private keys. */
export const keyPairs: Record<string, KeyPair> = Object.fromEntries(
  v.keys.map((k: any) => [k.name, KeyPair.fromPrivateKeys(suiteOf(k.suite), h(k.signing_seed), h(k.kem_private_key))]),
);

/** cards are the vector cards by name, parsed. */
export const cards: Record<string, Card> = Object.fromEntries(v.cards.map((c: any) => [c.name, parseCard(h(c.content), h(c.self_signature))]));

/** keyFor returns the key pair of a vector card by card id. */
export function keyFor(id: Uint8Array): KeyPair | undefined {
  for (const c of v.cards) {
    if (cards[c.name]!.id.every((b, i) => b === id[i])) return keyPairs[c.key];
  }
  return undefined;
}
