// Messaging (pkg/sdk messaging.go): send with idempotent client message ids and
// retries, an inbox subscription that resumes by itself from its cursor, history, and
// opening what arrives.

import { fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { BackupEventSchema, type BackupEvent } from "../gen/umbra/backup/v1/backup_pb.js";
import { GroupEventSchema, type GroupEvent } from "../gen/umbra/group/v1/group_pb.js";
import {
  MessageKind,
  MessagingService,
  type HistoryRequestSchema,
  type HistoryResponse,
  type Message,
  type SendRequestSchema,
  type SendResponse,
  type SubscribeResponse,
} from "../gen/umbra/messaging/v1/messaging_pb.js";
import { Code, NetworkError, RpcError } from "../transport/errors.js";
import { sleep } from "../transport/rest.js";
import type { UmbraClient } from "./client.js";

/** The Event.type of the group service's events. */
export const GroupEventType = "umbra.group.v1.GroupEvent";
/** The Event.type of the backup service's events. */
export const BackupEventType = "umbra.backup.v1.BackupEvent";

/** How long a send is retried. */
const sendRetryMs = 60_000;

/** A fresh idempotency key for send: 128 random bits in base32, as the Go SDK makes them. */
export function newClientMessageId(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let out = "";
  let bits = 0;
  let value = 0;
  for (const x of b) {
    value = (value << 8) | x;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

/** Whether a failed send may be made again as it is, with the same client message id. */
function retrySend(err: unknown): boolean {
  if (err instanceof NetworkError) return true;
  return err instanceof RpcError && [Code.UNAVAILABLE, Code.INTERNAL, Code.UNKNOWN, Code.DEADLINE_EXCEEDED, Code.UNAUTHENTICATED].includes(err.code);
}

/**
 * Sends a prepared message, retrying with the same request for up to a minute (or until
 * signal aborts) the failures that may be transient: the server unavailable or its
 * storage full, an internal error, a lost answer, and an expired token (with a fresh
 * one). The server's idempotency on client_message_id stores the message once.
 */
export async function send(c: UmbraClient, req: MessageInitShape<typeof SendRequestSchema>, signal?: AbortSignal): Promise<SendResponse> {
  const deadline = Date.now() + sendRetryMs;
  let delay = 100;
  let refreshed = false;
  for (;;) {
    try {
      return await c.transport.unary(MessagingService.method.send, req, { signal });
    } catch (e) {
      if (signal?.aborted || !retrySend(e) || Date.now() > deadline) throw e;
      if (e instanceof RpcError && e.code === Code.UNAUTHENTICATED) {
        if (refreshed) throw e;
        refreshed = true;
        c.transport.tokens?.invalidate();
        continue;
      }
      await sleep(delay, signal);
      delay = Math.min(2 * delay, 5000);
    }
  }
}

/**
 * Encrypts data for peer (an identity; the user's own card is a recipient too) and sends
 * it in their direct conversation, with a fresh client message id kept across retries.
 */
export async function sendTo(c: UmbraClient, peer: string, data: Uint8Array, signal?: AbortSignal): Promise<SendResponse> {
  const { cardId } = c.current();
  const envelope = await c.encrypt(data, [peer], signal);
  return send(
    c,
    {
      conversationId: peer,
      clientMessageId: newClientMessageId(),
      header: { kind: MessageKind.ENCRYPTED, senderCardId: cardId },
      envelope,
    },
    signal,
  );
}

/**
 * One page of a conversation's messages. Presence matters (docs/api-conventions.md):
 * afterSequence: 0n pages forwards from the oldest; leaving it and beforeSequence out
 * pages backwards from the newest.
 */
export function history(c: UmbraClient, req: MessageInitShape<typeof HistoryRequestSchema>, signal?: AbortSignal): Promise<HistoryResponse> {
  return c.transport.unary(MessagingService.method.history, req, { signal });
}

/** Where a subscription starts. The default is live: only what is stored from now on. */
export interface SubscribeOptions {
  /** Resume after this inbox sequence; 0n replays everything still stored (as fromStart). */
  readonly after?: bigint | undefined;
  /** Replay everything still stored, then go on live. Excludes an after above 0. */
  readonly fromStart?: boolean | undefined;
  /** The heartbeat interval asked of the server; the server's default (15 s) if absent. */
  readonly heartbeatMs?: number | undefined;
  /** A stream silent for this long is taken as lost and opened again; 3 heartbeats by default. */
  readonly idleTimeoutMs?: number | undefined;
  readonly signal?: AbortSignal | undefined;
}

/**
 * The user's inbox as an async iterable: every item addressed to the user, in order,
 * heartbeats included, until the signal aborts. After a disconnect it resumes by itself
 * after the last item the loop took, so nothing is missed or delivered twice; a refused
 * token is replaced from the token provider. A refusal that no retry can fix (a bad
 * cursor) is thrown.
 */
export async function* inbox(c: UmbraClient, opts: SubscribeOptions = {}): AsyncGenerator<SubscribeResponse, void, undefined> {
  if (opts.fromStart && opts.after !== undefined && opts.after > 0n) {
    throw new Error(`umbra: subscribe: fromStart and after ${opts.after} ask for two different starts`);
  }
  let after = opts.after;
  let delay = 100;
  const idleMs = opts.idleTimeoutMs ?? 3 * (opts.heartbeatMs ?? 15_000) + 5_000;
  while (!opts.signal?.aborted) {
    const conn = new AbortController();
    const onAbort = () => conn.abort(opts.signal?.reason);
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    let idle: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => conn.abort(new NetworkError("umbra.messaging.v1.MessagingService.Subscribe", "the stream went silent")), idleMs);
    };
    let err: unknown;
    try {
      arm();
      // Once an item (a heartbeat included) has been taken, after holds its cursor and
      // a reconnection resumes there rather than from the start. Presence matters: 0n
      // is sent as afterInboxSequence=0 (everything), undefined not at all (live).
      const stream = c.transport.serverStream(
        MessagingService.method.subscribe,
        {
          ...(after !== undefined ? { afterInboxSequence: after } : {}),
          fromStart: opts.fromStart === true && after === undefined,
          ...(opts.heartbeatMs ? { heartbeatInterval: { seconds: BigInt(Math.floor(opts.heartbeatMs / 1000)), nanos: (opts.heartbeatMs % 1000) * 1e6 } } : {}),
        },
        { signal: conn.signal },
      );
      for await (const item of stream) {
        arm();
        c.observeItem(item);
        yield item;
        after = item.inboxSequence;
        delay = 100;
      }
    } catch (e) {
      err = e;
    } finally {
      clearTimeout(idle);
      opts.signal?.removeEventListener("abort", onAbort);
    }
    if (opts.signal?.aborted) return;
    if (err instanceof RpcError) {
      if (err.code === Code.UNAUTHENTICATED) c.transport.tokens?.invalidate();
      else if (![Code.UNAVAILABLE, Code.INTERNAL, Code.UNKNOWN, Code.DEADLINE_EXCEEDED].includes(err.code)) throw err;
    } else if (err !== undefined && !(err instanceof NetworkError) && !conn.signal.aborted) {
      throw err;
    }
    try {
      await sleep(delay, opts.signal);
    } catch {
      return;
    }
    delay = Math.min(2 * delay, 5000);
  }
}

/**
 * Delivers every item addressed to the user to handle, in order, until the signal aborts
 * (then it resolves) or handle throws (then it rejects with handle's error). It resumes
 * by itself from the last item handle accepted.
 */
export async function subscribe(c: UmbraClient, opts: SubscribeOptions, handle: (item: SubscribeResponse) => void | Promise<void>): Promise<void> {
  for await (const item of inbox(c, opts)) {
    await handle(item);
  }
}

/**
 * Opens a message: an ENCRYPTED one with the user's keys (a group's with its epoch key),
 * checked against its sender; a PLAINTEXT one is returned as it is.
 */
export async function openMessage(c: UmbraClient, m: Message, signal?: AbortSignal): Promise<Uint8Array> {
  if (m.header?.kind === MessageKind.PLAINTEXT) return m.envelope;
  if (m.conversationId.startsWith("g_")) return c.openGroupMessage(m, signal);
  return c.decrypt(m.envelope, m.sender, signal);
}

/** Decodes a group event from a Subscribe item, or undefined for an item that is not one. */
export function groupEvent(item: SubscribeResponse): GroupEvent | undefined {
  return decodeEvent(item, GroupEventType, (b) => fromBinary(GroupEventSchema, b));
}

/** Decodes a backup event (a backup erased after its attempts ran out), or undefined. */
export function backupEvent(item: SubscribeResponse): BackupEvent | undefined {
  return decodeEvent(item, BackupEventType, (b) => fromBinary(BackupEventSchema, b));
}

function decodeEvent<T>(item: SubscribeResponse, type: string, parse: (b: Uint8Array) => T): T | undefined {
  if (item.item.case !== "event" || item.item.value.type !== type) return undefined;
  try {
    return parse(item.item.value.payload);
  } catch {
    return undefined;
  }
}
