// Standard base64 (RFC 4648, section 4, with padding) as Go's encoding/base64 reads it,
// since the signed-note formats are defined by what Go's golang.org/x/mod/sumdb/note
// accepts: padding required, '\r' and '\n' skipped, the unused low bits of the last
// character ignored (StdEncoding) or required to be zero (StdEncoding.Strict()). atob
// differs (padding optional, spaces skipped), so it is not used.

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const values = new Int16Array(128).fill(-1);
for (let i = 0; i < alphabet.length; i++) values[alphabet.charCodeAt(i)] = i;

/** base64Encode is standard base64 with padding. */
export function base64Encode(b: Uint8Array): string {
  let out = "";
  for (let i = 0; i < b.length; i += 3) {
    const n = (b[i]! << 16) | ((b[i + 1] ?? 0) << 8) | (b[i + 2] ?? 0);
    out += alphabet[(n >> 18) & 63]! + alphabet[(n >> 12) & 63]!;
    out += i + 1 < b.length ? alphabet[(n >> 6) & 63]! : "=";
    out += i + 2 < b.length ? alphabet[n & 63]! : "=";
  }
  return out;
}

/**
 * base64Decode decodes s as Go's base64.StdEncoding.DecodeString does (or its Strict()
 * form), and returns undefined where Go returns an error.
 */
export function base64Decode(s: string, strict = false): Uint8Array | undefined {
  s = s.replace(/[\r\n]/g, "");
  if (s.length % 4 !== 0) return undefined;
  const out = new Uint8Array((s.length / 4) * 3);
  let n = 0;
  for (let i = 0; i < s.length; i += 4) {
    const last = i + 4 === s.length;
    const q = [0, 0, 0, 0];
    let chars = 4;
    for (let j = 0; j < 4; j++) {
      const c = s.charCodeAt(i + j);
      if (c === 0x3d /* = */) {
        // Padding: only in the last quantum, after two or three characters, and "=="
        // must be whole.
        if (!last || j < 2) return undefined;
        if (j === 2 && s.charCodeAt(i + 3) !== 0x3d) return undefined;
        chars = j;
        break;
      }
      const v = c < 128 ? values[c]! : -1;
      if (v < 0) return undefined;
      q[j] = v;
    }
    const word = (q[0]! << 18) | (q[1]! << 12) | (q[2]! << 6) | q[3]!;
    out[n++] = (word >> 16) & 0xff;
    if (chars >= 3) out[n++] = (word >> 8) & 0xff;
    if (chars === 4) out[n++] = word & 0xff;
    if (strict && ((chars === 2 && (q[1]! & 0x0f) !== 0) || (chars === 3 && (q[2]! & 0x03) !== 0))) return undefined;
  }
  return out.slice(0, n);
}
