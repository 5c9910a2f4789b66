// Access tokens: the app backend mints them (IdentityService.IssueToken with the app's
// API key, after authenticating its user); the SDK asks for one through a TokenProvider
// whenever it has none, the one it has is about to expire, or a service refused it.

/** Returns a fresh access token for the user, typically by asking the app backend. */
export type TokenProvider = (signal?: AbortSignal) => Promise<string>;

/** How long before its expiry a token is replaced. */
const refreshMarginMs = 30_000;

/** TokenCache keeps the current token and fetches a new one when needed. */
export class TokenCache {
  readonly #fetch: TokenProvider;
  readonly #now: () => number;
  #token = "";
  #expiresAt = 0;
  #pending: Promise<string> | undefined;

  constructor(fetch: TokenProvider, now: () => number = Date.now) {
    this.#fetch = fetch;
    this.#now = now;
  }

  /**
   * Returns a usable token. With stale, the token a server just refused, a new one is
   * fetched unless the cached one already differs (another call refreshed it).
   */
  async get(stale = "", signal?: AbortSignal): Promise<string> {
    if (this.#token !== "" && this.#token !== stale && this.#now() + refreshMarginMs < this.#expiresAt) {
      return this.#token;
    }
    // One fetch at a time: calls that need a token meanwhile wait for the same one.
    if (!this.#pending) {
      this.#pending = (async () => {
        try {
          const tok = await this.#fetch(signal);
          if (typeof tok !== "string" || tok === "") {
            throw new Error("umbra: the token provider returned no token");
          }
          this.#token = tok;
          this.#expiresAt = tokenExpiry(tok, this.#now());
          return tok;
        } finally {
          this.#pending = undefined;
        }
      })();
    }
    return this.#pending;
  }

  /** Drops the cached token, so the next call fetches a fresh one. */
  invalidate(): void {
    this.#token = "";
  }
}

/**
 * Reads a JWT's exp claim without verifying it (the server verifies), in milliseconds;
 * a token it cannot read is used for a minute.
 */
export function tokenExpiry(tok: string, now: number): number {
  const parts = tok.split(".");
  if (parts.length === 3) {
    try {
      const b64 = parts[1]!.replace(/-/g, "+").replace(/_/g, "/");
      const payload = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4))) as { exp?: unknown };
      if (typeof payload.exp === "number" && payload.exp > 0) {
        return payload.exp * 1000;
      }
    } catch {
      // not a JWT we can read: fall through
    }
  }
  return now + 60_000 + refreshMarginMs;
}
