// Errors of the REST transport: a refusal by a service is an RpcError carrying the gRPC
// code, the service's message and its typed details, exactly as the gateway writes
// them ({"code", "message", "details"}); a request that never got an answer is a
// NetworkError.

import { fromJson, type DescMessage, type JsonValue, type MessageShape, type Registry } from "@bufbuild/protobuf";

/** The gRPC status codes, as the gateway's error JSON carries them. */
export enum Code {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
}

/** A status detail as the gateway sent it: its type URL and its JSON. */
export interface RawDetail {
  readonly typeUrl: string;
  readonly json: JsonValue;
}

/**
 * RpcError is a call the service (or the gateway) refused. `code` is the gRPC code,
 * `rawMessage` the service's message, `details` the status details as JSON; `detail`
 * decodes one of them into its generated type.
 */
export class RpcError extends Error {
  override readonly name = "RpcError";
  readonly code: Code;
  readonly rawMessage: string;
  readonly details: readonly RawDetail[];
  /** The HTTP status of the answer. */
  readonly httpStatus: number;
  /** The RPC, as "umbra.card.v1.CardService.PublishCard". */
  readonly method: string;
  readonly #registry: Registry | undefined;

  constructor(
    method: string,
    code: Code,
    message: string,
    details: readonly RawDetail[] = [],
    httpStatus = 0,
    registry?: Registry,
  ) {
    super(`${method}: ${Code[code] ?? `code ${code}`}: ${message}`);
    this.method = method;
    this.code = code;
    this.rawMessage = message;
    this.details = details;
    this.httpStatus = httpStatus;
    this.#registry = registry;
  }

  /** Returns the first detail of the given type, decoded, or undefined. */
  detail<Desc extends DescMessage>(schema: Desc): MessageShape<Desc> | undefined {
    const url = "type.googleapis.com/" + schema.typeName;
    for (const d of this.details) {
      if (d.typeUrl !== url || d.json === null || typeof d.json !== "object" || Array.isArray(d.json)) {
        continue;
      }
      const { ["@type"]: _type, ...rest } = d.json as { [k: string]: JsonValue };
      try {
        return fromJson(schema, rest, { ignoreUnknownFields: true, ...(this.#registry ? { registry: this.#registry } : {}) });
      } catch {
        return undefined;
      }
    }
    return undefined;
  }
}

/** NetworkError is a request that got no answer from the gateway (fetch failed). */
export class NetworkError extends Error {
  override readonly name = "NetworkError";
  readonly method: string;
  constructor(method: string, cause: unknown) {
    super(`${method}: no answer from the server: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.method = method;
  }
}

/** Reports whether err is an RpcError with one of the codes. */
export function hasCode(err: unknown, ...codes: Code[]): err is RpcError {
  return err instanceof RpcError && codes.includes(err.code);
}

/** Returns the first status detail of type schema in err, if err is an RpcError. */
export function statusDetail<Desc extends DescMessage>(err: unknown, schema: Desc): MessageShape<Desc> | undefined {
  return err instanceof RpcError ? err.detail(schema) : undefined;
}

/** Maps an HTTP status without a JSON error body to a gRPC code, as gRPC does. */
export function codeFromHTTP(status: number): Code {
  switch (status) {
    case 400:
      return Code.INVALID_ARGUMENT;
    case 401:
      return Code.UNAUTHENTICATED;
    case 403:
      return Code.PERMISSION_DENIED;
    case 404:
      return Code.NOT_FOUND;
    case 409:
      return Code.ABORTED;
    case 429:
      return Code.RESOURCE_EXHAUSTED;
    case 501:
      return Code.UNIMPLEMENTED;
    case 502:
    case 503:
    case 504:
      return Code.UNAVAILABLE;
  }
  return Code.UNKNOWN;
}

/** Parses the gateway's error JSON ({"code", "message", "details"}); undefined if it is not one. */
export function parseStatusJson(
  method: string,
  json: unknown,
  httpStatus: number,
  registry?: Registry,
): RpcError | undefined {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    return undefined;
  }
  const o = json as { [k: string]: unknown };
  if (typeof o["code"] !== "number" || typeof o["message"] !== "string") {
    return undefined;
  }
  const details: RawDetail[] = [];
  if (Array.isArray(o["details"])) {
    for (const d of o["details"]) {
      if (d !== null && typeof d === "object" && !Array.isArray(d) && typeof (d as { [k: string]: unknown })["@type"] === "string") {
        details.push({ typeUrl: (d as { [k: string]: string })["@type"]!, json: d as JsonValue });
      }
    }
  }
  return new RpcError(method, o["code"] as Code, o["message"], details, httpStatus, registry);
}
