// What the bundle gets for Node's "crypto" module. @hpke/common, which the SDK uses for
// HPKE, falls back to `import("crypto")` for WebCrypto when globalThis.crypto is
// missing, which never happens on a page (http://127.0.0.1 and http://localhost are
// secure contexts, where WebCrypto is always present). vite.config.ts points "crypto"
// here, so no Node module is bundled and the fallback, were it ever reached, gets the
// page's own WebCrypto.
export const webcrypto = globalThis.crypto;
export default { webcrypto };
