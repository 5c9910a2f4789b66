// The REST transport: every RPC through the gateway with fetch, in the protos' JSON
// mapping (protobuf-es's toJson and fromJson of the generated types), server streams as
// newline-delimited JSON. It works the same in Node 20+ and in browsers, with no proxy.

import {
  create,
  createRegistry,
  fromJson,
  toJson,
  type DescMessage,
  type DescMethod,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type JsonObject,
  type JsonValue,
  type MessageInitShape,
  type MessageShape,
  type Registry,
  ScalarType,
} from "@bufbuild/protobuf";
import { file_umbra_backup_v1_backup } from "../gen/umbra/backup/v1/backup_pb.js";
import { file_umbra_card_v1_card } from "../gen/umbra/card/v1/card_pb.js";
import { file_umbra_group_v1_group } from "../gen/umbra/group/v1/group_pb.js";
import { file_umbra_identity_v1_identity } from "../gen/umbra/identity/v1/identity_pb.js";
import { file_umbra_messaging_v1_messaging } from "../gen/umbra/messaging/v1/messaging_pb.js";
import { Code, NetworkError, RpcError, codeFromHTTP, parseStatusJson } from "./errors.js";
import { idempotentWrites, routes } from "./routes.js";
import { TokenCache, type TokenProvider } from "./token.js";

/** Every type a status detail of Umbra's services may be. */
export const registry: Registry = createRegistry(
  file_umbra_identity_v1_identity,
  file_umbra_card_v1_card,
  file_umbra_backup_v1_backup,
  file_umbra_group_v1_group,
  file_umbra_messaging_v1_messaging,
);

/** How calls are retried after UNAVAILABLE or a request that got no answer. */
export interface RetryOptions {
  /** Attempts in all, the first included; 1 disables retries. Default 5. */
  readonly attempts?: number;
  /** The first wait; it doubles after each attempt. Default 100 ms. */
  readonly initialDelayMs?: number;
  /** The longest wait. Default 5 s. */
  readonly maxDelayMs?: number;
}

/** How a call authenticates. */
export type Auth =
  /** the user's access token, from the TokenProvider (the default) */
  | "token"
  /** no credential: public RPCs */
  | "none"
  /** this bearer credential, as it is: an app API key, for the app backend's calls */
  | { readonly bearer: string };

export interface CallOptions {
  readonly signal?: AbortSignal | undefined;
  readonly auth?: Auth | undefined;
  /** Retry even a write that is not idempotent. For callers that make it idempotent. */
  readonly forceRetry?: boolean | undefined;
}

export interface TransportOptions {
  /** The gateway's address, e.g. "http://127.0.0.1:8080". */
  readonly baseUrl: string;
  /** Returns the user's access tokens; required for calls with auth "token". */
  readonly token?: TokenProvider | undefined;
  /** Defaults to the global fetch. */
  readonly fetch?: typeof fetch | undefined;
  readonly retry?: RetryOptions | undefined;
  /** Defaults to Date.now. */
  readonly now?: (() => number) | undefined;
}

/** A method of a generated service descriptor, unary or server-streaming. */
type AnyMethod = DescMethodUnary | DescMethodServerStreaming;

/**
 * RestTransport calls Umbra's services through the REST gateway. A refusal is an
 * RpcError with the service's gRPC code, message and details; reads and idempotent
 * writes are retried with backoff on UNAVAILABLE and on requests that got no answer; a
 * call refused with UNAUTHENTICATED is made once more with a fresh token.
 */
export class RestTransport {
  readonly baseUrl: string;
  readonly tokens: TokenCache | undefined;
  readonly #fetch: typeof fetch;
  readonly #retry: Required<RetryOptions>;

  constructor(opts: TransportOptions) {
    if (!/^https?:\/\//.test(opts.baseUrl)) {
      throw new Error(`umbra: baseUrl ${JSON.stringify(opts.baseUrl)} is not an http(s) URL`);
    }
    this.baseUrl = opts.baseUrl.replace(/\/+$/, "");
    this.tokens = opts.token ? new TokenCache(opts.token, opts.now) : undefined;
    this.#fetch = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.#retry = {
      attempts: Math.max(1, opts.retry?.attempts ?? 5),
      initialDelayMs: opts.retry?.initialDelayMs ?? 100,
      maxDelayMs: opts.retry?.maxDelayMs ?? 5000,
    };
  }

  /** Calls a unary RPC. */
  async unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    request: MessageInitShape<I>,
    opts: CallOptions = {},
  ): Promise<MessageShape<O>> {
    const name = methodName(method);
    const req = create(method.input, request);
    const retryable = opts.forceRetry === true || isRetryable(name);
    const res = await this.#send(method, req, opts, retryable);
    const text = await this.#readText(name, res);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new RpcError(name, Code.INTERNAL, `the gateway's answer is not JSON (HTTP ${res.status})`, [], res.status);
    }
    return decode(name, method.output, json);
  }

  /**
   * Calls a server-streaming RPC and yields its items as they arrive, until the stream
   * ends or the signal aborts. An error the service sends on the stream is thrown.
   * Opening the stream is retried as a read is; once it is open, the caller resumes.
   */
  async *serverStream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    request: MessageInitShape<I>,
    opts: CallOptions = {},
  ): AsyncGenerator<MessageShape<O>, void, undefined> {
    const name = methodName(method);
    const req = create(method.input, request);
    const res = await this.#send(method, req, opts, true);
    if (!res.body) {
      throw new RpcError(name, Code.INTERNAL, "the gateway's stream has no body", [], res.status);
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    try {
      for (;;) {
        let chunk: ReadableStreamReadResult<string>;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (opts.signal?.aborted) {
            throw opts.signal.reason ?? err;
          }
          throw new NetworkError(name, err);
        }
        if (chunk.done) {
          break;
        }
        buffered += chunk.value;
        let nl: number;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (line !== "") {
            yield streamItem(name, method.output, line, res.status);
          }
        }
      }
      if (buffered.trim() !== "") {
        yield streamItem(name, method.output, buffered.trim(), res.status);
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
  }

  /** Sends one call, with the token and retries, and returns a response that is OK. */
  async #send(method: AnyMethod, req: MessageShape<DescMessage>, opts: CallOptions, retryable: boolean): Promise<Response> {
    const name = methodName(method);
    const [verb, url, body] = this.#request(name, method.input, req);
    let delay = this.#retry.initialDelayMs;
    let refreshed = false;
    let stale = "";
    for (let attempt = 1; ; attempt++) {
      const headers: Record<string, string> = { Accept: "application/json" };
      if (body !== undefined) {
        headers["Content-Type"] = "application/json";
      }
      const auth = opts.auth ?? "token";
      let token = "";
      if (auth === "token") {
        if (!this.tokens) {
          throw new Error(`umbra: ${name} needs the user's access token, and no token provider is configured`);
        }
        token = await this.tokens.get(stale, opts.signal);
        headers["Authorization"] = "Bearer " + token;
      } else if (auth !== "none") {
        headers["Authorization"] = "Bearer " + auth.bearer;
      }
      let err: Error;
      try {
        const res = await this.#fetch(url, {
          method: verb,
          headers,
          ...(body !== undefined ? { body } : {}),
          ...(opts.signal ? { signal: opts.signal } : {}),
        });
        if (res.ok) {
          return res;
        }
        err = await errorOf(name, res);
      } catch (e) {
        if (opts.signal?.aborted) {
          throw opts.signal.reason ?? e;
        }
        err = e instanceof RpcError ? e : new NetworkError(name, e);
      }
      if (err instanceof RpcError && err.code === Code.UNAUTHENTICATED && auth === "token" && !refreshed) {
        refreshed = true;
        stale = token;
        continue;
      }
      const transient = err instanceof NetworkError || (err instanceof RpcError && err.code === Code.UNAVAILABLE);
      if (!transient || !retryable || attempt >= this.#retry.attempts) {
        throw err;
      }
      await sleep(delay, opts.signal);
      delay = Math.min(2 * delay, this.#retry.maxDelayMs);
    }
  }

  /** The verb, URL and body of a call. */
  #request(name: string, schema: DescMessage, req: MessageShape<DescMessage>): [string, string, string | undefined] {
    const route = routes[name];
    if (!route) {
      throw new Error(`umbra: ${name} has no REST route`);
    }
    const [verb, template] = route;
    const json = toJson(schema, req, { registry }) as JsonObject;
    const used = new Set<string>();
    const path = template.replace(/\{([a-z0-9_]+)\}/g, (_, protoName: string) => {
      const field = schema.fields.find((f) => f.name === protoName);
      if (!field) {
        throw new Error(`umbra: the route of ${name} names ${protoName}, which its request does not have`);
      }
      used.add(field.jsonName);
      const v = json[field.jsonName];
      if (typeof v !== "string" || v === "") {
        throw new RpcError(name, Code.INVALID_ARGUMENT, `${protoName} is required`);
      }
      // Bytes in a path are written in the URL-safe alphabet, which the gateway reads.
      const text = field.fieldKind === "scalar" && field.scalar === ScalarType.BYTES ? v.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "") : v;
      return encodeURIComponent(text);
    });
    const rest: JsonObject = {};
    for (const [k, v] of Object.entries(json)) {
      if (!used.has(k)) {
        rest[k] = v;
      }
    }
    if (verb === "POST") {
      return [verb, this.baseUrl + path, JSON.stringify(rest)];
    }
    const q = new URLSearchParams();
    addQuery(q, "", rest);
    const qs = q.toString();
    return [verb, this.baseUrl + path + (qs ? "?" + qs : ""), undefined];
  }

  async #readText(name: string, res: Response): Promise<string> {
    try {
      return await res.text();
    } catch (e) {
      throw new NetworkError(name, e);
    }
  }
}

/** The full name of a method: "umbra.card.v1.CardService.PublishCard". */
export function methodName(m: Pick<DescMethod, "parent" | "name">): string {
  return m.parent.typeName + "." + m.name;
}

function isRetryable(name: string): boolean {
  return routes[name]?.[0] === "GET" || idempotentWrites.has(name);
}

/** Writes a JSON request's fields as query parameters, nested messages as a.b. */
function addQuery(q: URLSearchParams, prefix: string, v: JsonValue): void {
  if (v === null) {
    return;
  }
  if (Array.isArray(v)) {
    for (const e of v) {
      addQuery(q, prefix, e);
    }
    return;
  }
  if (typeof v === "object") {
    for (const [k, e] of Object.entries(v)) {
      addQuery(q, prefix ? prefix + "." + k : k, e);
    }
    return;
  }
  q.append(prefix, String(v));
}

/** Decodes an answer. Unknown fields are ignored, as a gRPC client ignores them. */
function decode<O extends DescMessage>(name: string, schema: O, json: unknown): MessageShape<O> {
  try {
    return fromJson(schema, json as JsonValue, { ignoreUnknownFields: true, registry });
  } catch (e) {
    throw new RpcError(name, Code.INTERNAL, `the gateway's answer does not parse as ${schema.typeName}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

function streamItem<O extends DescMessage>(name: string, schema: O, line: string, status: number): MessageShape<O> {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    throw new RpcError(name, Code.INTERNAL, "a line of the stream is not JSON", [], status);
  }
  if (json !== null && typeof json === "object" && !Array.isArray(json)) {
    const o = json as { [k: string]: unknown };
    if ("error" in o) {
      throw parseStatusJson(name, o["error"], status, registry) ?? new RpcError(name, Code.UNKNOWN, "the stream failed", [], status);
    }
    if ("result" in o) {
      return decode(name, schema, o["result"]);
    }
  }
  throw new RpcError(name, Code.INTERNAL, "a line of the stream is neither a result nor an error", [], status);
}

/** The error of a response that is not OK: the gateway's status JSON when it has one. */
async function errorOf(name: string, res: Response): Promise<RpcError> {
  let text = "";
  try {
    text = await res.text();
  } catch {
    // the body is lost: the HTTP status decides
  }
  try {
    const json = JSON.parse(text) as unknown;
    const inner = json !== null && typeof json === "object" && "error" in json ? (json as { error: unknown }).error : json;
    const err = parseStatusJson(name, inner, res.status, registry);
    if (err) {
      return err;
    }
  } catch {
    // not JSON: a proxy's page, say
  }
  return new RpcError(name, codeFromHTTP(res.status), `HTTP ${res.status} ${res.statusText}`.trim(), [], res.status);
}

/** Waits ms, or until signal aborts (rejecting with its reason). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
