// The web chat's one door to Umbra. The screens call only ChatAdapter; DevChatAdapter
// implements it with @umbra-e2ee/sdk's UmbraClient, which holds the keys, encrypts,
// decrypts and verifies everything in this browser, and with `umbra dev`'s development
// routes for what an app backend would do (signing a name in, the names of the users
// and groups).
//
// Each user's keystore lives in this browser's IndexedDB, in a database of its own
// ("umbra:" and the identity), as the wire format's keystore file encrypted under the
// passphrase typed at sign-in (Argon2id, run by the Web Worker of argon2.worker.ts, and
// ChaCha20-Poly1305). The passphrase is kept nowhere: a reload asks for it again.
import {
  Code,
  E2eeErrorKind,
  IndexedDBStorage,
  KeyChangedError,
  NetworkError,
  UmbraClient,
  UmbraErrorKind,
  WrongPasswordError,
  explainReason,
  groupEvent,
  hasCode,
  hasKind,
  safetyNumber as computeSafetyNumber,
  toHex,
} from '@umbra-e2ee/sdk';

/** A signed-in user of the development app. */
export interface Session {
  /** The name typed at sign-in: the app's own user id (`umbra login NAME`'s NAME). */
  name: string;
  /** The opaque Umbra identity ("u_..."). */
  identity: string;
  /**
   * The user has keys (an active card), but not in this browser: a new device, where
   * the chat can do nothing until the keys are restored from the backup.
   */
  needsRestore: boolean;
}

/** Someone the user can write to. */
export interface Contact {
  name: string;
  identity: string;
}

/** A group the user is a member of. */
export interface GroupSummary {
  /** The group identity ("g_..."). */
  id: string;
  /** What the chat shows: the group's name, or its identity if the chat was not told the name. */
  name: string;
  memberCount: number;
  /** The group key's epoch: it goes up each time the key rotates. */
  epoch: number;
  myRole: string;
}

/** Which conversation: with one contact, or a group's. */
export type Conversation =
  | { kind: 'direct'; contact: Contact }
  | { kind: 'group'; group: GroupSummary };

/** One message, decrypted and verified by the SDK. */
export interface ChatMessage {
  /** The canonical conversation id ("d_..." or "g_..."). */
  conversationId: string;
  /** The message's sequence number in its conversation: with conversationId, its key. */
  sequence: number;
  /** The sender's identity, and name where the chat knows it. */
  sender: string;
  senderName: string;
  mine: boolean;
  /** The decrypted text, or why it could not be read (then failed is set). */
  text: string;
  failed: boolean;
  sentAt: Date;
}

/** A contact's safety number, to compare with theirs out of band. */
export interface SafetyNumber {
  contact: Contact;
  /** Twelve groups of five digits, as `umbra trust show` prints them. */
  groups: string[];
  verified: boolean;
  /** A key change the user has not accepted: the safety number with the new key. */
  pending?: { groups: string[]; reason: string };
}

/** A contact whose key changed: nothing is encrypted to them until the user accepts. */
export interface KeyChange {
  contact: Contact;
  newSafetyNumber: SafetyNumber;
  /** Why the new key is not trusted as the old one was. */
  reason: string;
}

/** What a subscription delivers. */
export type ChatEvent =
  | { type: 'message'; conversation: Conversation; message: ChatMessage }
  | { type: 'key-change'; change: KeyChange }
  | { type: 'groups-changed' }
  | { type: 'connection'; state: 'live' | 'reconnecting' };

/** The argon2id cost and inputs the SDK asks for (docs/wire-format.md). */
export interface Argon2idParams {
  password: Uint8Array;
  salt: Uint8Array;
  /** t */
  iterations: number;
  /** m, in KiB */
  memoryKiB: number;
  /** p */
  parallelism: number;
  /** tag length in bytes */
  hashLength: number;
}

/** Everything the chat needs from Umbra. */
export interface ChatAdapter {
  /**
   * Signs in as a typed name (development only: `umbra dev`'s /dev/sign-in) and opens
   * the name's keys in this browser with passphrase: a first sign-in makes the keys and
   * publishes their card; on a new device the session says the keys need restoring.
   */
  signIn(name: string, passphrase: string): Promise<Session>;
  /** Stops the subscription and forgets the session and the keys unlocked in memory. */
  signOut(): void;
  /** The other users of the development app. */
  listContacts(): Promise<Contact[]>;
  /** A contact by name (someone who has not used the web chat, e.g. a CLI user). */
  findContact(name: string): Promise<Contact>;
  listGroups(): Promise<GroupSummary[]>;
  createGroup(name: string, members: Contact[]): Promise<GroupSummary>;
  /** Adds contacts to a group; the next message rotates the group's key to include them. */
  addMembers(group: GroupSummary, members: Contact[]): Promise<void>;
  /** The newest messages of a conversation (before a sequence number, if given), oldest first. */
  history(conversation: Conversation, before?: number): Promise<ChatMessage[]>;
  send(conversation: Conversation, text: string): Promise<ChatMessage>;
  /** Delivers events until the returned function is called; resumes by itself from its cursor. */
  subscribe(onEvent: (event: ChatEvent) => void): () => void;
  safetyNumber(contact: Contact): Promise<SafetyNumber>;
  /** Marks a contact verified after comparing safety numbers. */
  markVerified(contact: Contact): Promise<void>;
  /** Accepts a contact's new key after a key change. */
  acceptKeyChange(contact: Contact): Promise<void>;
  /** Backs the user's private keys up under a password (OPRF + Argon2id). */
  backup(password: string): Promise<void>;
  /** Restores the user's private keys from a backup into this browser. */
  restore(password: string): Promise<void>;
}

/** An error the chat shows as it is. */
export class ChatError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ChatError';
  }
}

/** An Argon2id implementation (the worker's), for the SDK's keystore and backups. */
export type Argon2id = (params: Argon2idParams) => Promise<Uint8Array>;

type StoredMessage = Awaited<ReturnType<UmbraClient['history']>>['messages'][number];
type InboxItem = ReturnType<UmbraClient['inbox']> extends AsyncGenerator<infer T, void, undefined> ? T : never;

/** Messages read per history page. */
const historyPage = 100;
/** The subscription's heartbeat: how soon a silent, lost stream is noticed. */
const heartbeatMs = 10_000;

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: true });

/** What is open while signed in. */
interface Open {
  session: Session;
  client: UmbraClient;
  storage: IndexedDBStorage;
  /** Stops the subscription. */
  stop: AbortController;
}

/** ChatAdapter over `umbra dev`: its development routes and the SDK over its REST API at base. */
export class DevChatAdapter implements ChatAdapter {
  private open: Open | undefined;
  /** Names of the identities the chat has met (users and groups). */
  private readonly names = new Map<string, string>();
  /** The peer of each direct conversation ("d_...") the chat has met. */
  private readonly directPeers = new Map<string, string>();
  private readonly groupSummaries = new Map<string, GroupSummary>();
  private readonly listeners = new Set<(event: ChatEvent) => void>();
  /**
   * The key changes reported to the screens, by identity: the new card's id. The SDK
   * meets a pending change again at every call that checks the contact; the screens
   * hear of it once, until it is accepted.
   */
  private readonly reported = new Map<string, string>();

  constructor(
    private readonly argon2id: Argon2id,
    private readonly base = window.location.origin,
  ) {}

  /** The current session, if signed in. */
  get current(): Session | undefined {
    return this.open?.session;
  }

  async signIn(name: string, passphrase: string): Promise<Session> {
    if (passphrase === '') {
      throw new ChatError('Type a passphrase: it encrypts your keys in this browser.');
    }
    this.signOut();
    const who = await this.devSignIn(name);
    const storage = new IndexedDBStorage(`umbra:${who.identity}`);
    let client: UmbraClient;
    try {
      client = await UmbraClient.open({
        baseUrl: this.base,
        // umbra dev plays the app backend: a fresh token for the name whenever the SDK
        // needs one (the first, one about to expire, one a service refused).
        token: async () => (await this.devSignIn(who.name)).accessToken,
        storage,
        passphrase,
        argon2id: (password, salt, time, memoryKiB, threads, length) =>
          this.argon2id({ password, salt, iterations: time, memoryKiB, parallelism: threads, hashLength: length }),
        onKeyChange: (change) => void this.reportKeyChange(change),
      });
    } catch (err) {
      await storage.close();
      if (hasKind(err, E2eeErrorKind.Passphrase)) {
        throw new ChatError(`Wrong passphrase for ${who.name}’s keys in this browser.`, { cause: err });
      }
      throw chatError(err, this.names);
    }
    let needsRestore = false;
    try {
      if (!client.hasPrivateKey) {
        // An active card means the keys exist on another device: restore them rather
        // than make new ones (which contacts would see as a key change).
        const cards = await client.findCards([who.identity]);
        if (cards.has(who.identity)) {
          needsRestore = true;
        } else {
          await client.register();
        }
      }
    } catch (err) {
      await storage.close();
      throw chatError(err, this.names);
    }
    const session: Session = { name: who.name, identity: who.identity, needsRestore };
    this.names.set(who.identity, who.name);
    this.open = { session, client, storage, stop: new AbortController() };
    return session;
  }

  signOut(): void {
    const o = this.open;
    this.open = undefined;
    if (o) {
      o.stop.abort();
      void o.storage.close();
    }
    this.directPeers.clear();
    this.groupSummaries.clear();
    this.listeners.clear();
    this.reported.clear();
  }

  async listContacts(): Promise<Contact[]> {
    const me = this.requireOpen().session.identity;
    const body = await this.dev<{ users: Contact[] }>('GET', '/dev/users');
    for (const u of body.users) this.names.set(u.identity, u.name);
    return body.users.filter((u) => u.identity !== me);
  }

  async findContact(name: string): Promise<Contact> {
    const body = await this.dev<{ users: Contact[] }>('POST', '/dev/resolve', { names: [name] });
    const found = body.users[0];
    if (!found) {
      throw new ChatError(`No user named ${name}.`);
    }
    this.names.set(found.identity, found.name);
    return found;
  }

  async listGroups(): Promise<GroupSummary[]> {
    const { client } = this.requireKeys();
    // The services know groups by identity only; umbra dev, as the app backend, knows
    // the names it was given.
    const [groups, named] = await Promise.all([
      client.myGroups().catch((e: unknown) => {
        throw chatError(e, this.names);
      }),
      this.dev<{ groups: { name: string; identity: string }[] }>('GET', '/dev/groups'),
    ]);
    for (const g of named.groups) this.names.set(g.identity, g.name);
    const out = groups.map((g) => this.summary(g.groupId, g.memberCount, g.epoch, g.myRole));
    out.sort((a, b) => a.name.localeCompare(b.name));
    return out;
  }

  async createGroup(name: string, members: Contact[]): Promise<GroupSummary> {
    const { client } = this.requireKeys();
    if (members.length === 0) {
      throw new ChatError('Pick at least one member.');
    }
    const named = await this.dev<{ name: string; identity: string }>('POST', '/dev/groups', { name });
    this.names.set(named.identity, named.name);
    try {
      const g = await client.createGroup(named.identity, { members: members.map((m) => m.identity) });
      const info = await g.info();
      return this.summary(info.groupId, info.memberCount, info.epoch, info.myRole);
    } catch (err) {
      if (hasCode(err, Code.ALREADY_EXISTS)) {
        throw new ChatError(`A group named ${named.name} exists already: pick another name.`, { cause: err });
      }
      throw chatError(err, this.names);
    }
  }

  async addMembers(group: GroupSummary, members: Contact[]): Promise<void> {
    const { client } = this.requireKeys();
    if (members.length === 0) {
      throw new ChatError('Pick at least one contact to add.');
    }
    try {
      await client.group(group.id).add(members.map((m) => m.identity));
    } catch (err) {
      throw chatError(err, this.names);
    }
  }

  async history(conversation: Conversation, before?: number): Promise<ChatMessage[]> {
    const { client } = this.requireKeys();
    let page;
    try {
      page = await client.history({
        conversationId: conversation.kind === 'direct' ? conversation.contact.identity : conversation.group.id,
        pageSize: historyPage,
        ...(before === undefined ? {} : { beforeSequence: BigInt(before) }),
      });
    } catch (err) {
      throw chatError(err, this.names);
    }
    if (conversation.kind === 'direct') {
      this.directPeers.set(page.conversationId, conversation.contact.identity);
    }
    // Newest first from the server; one at a time, so each sender card is checked once.
    const out: ChatMessage[] = [];
    for (const m of [...page.messages].reverse()) {
      out.push(await this.read(m));
    }
    return out;
  }

  async send(conversation: Conversation, text: string): Promise<ChatMessage> {
    const { client, session } = this.requireKeys();
    const data = utf8.encode(text);
    let resp;
    try {
      resp =
        conversation.kind === 'direct'
          ? await client.sendTo(conversation.contact.identity, data)
          : // Group.send rotates the key by itself when the service asks for a new epoch
            // (a member added or removed, a card changed, the rotation policy).
            await client.group(conversation.group.id).send(data);
    } catch (err) {
      throw chatError(err, this.names, conversation.kind === 'direct' ? conversation.contact : undefined);
    }
    if (conversation.kind === 'direct') {
      this.directPeers.set(resp.conversationId, conversation.contact.identity);
    }
    return {
      conversationId: resp.conversationId,
      sequence: Number(resp.sequence),
      sender: session.identity,
      senderName: session.name,
      mine: true,
      text,
      failed: false,
      sentAt: resp.serverTime ? timestampDate(resp.serverTime) : new Date(),
    };
  }

  subscribe(onEvent: (event: ChatEvent) => void): () => void {
    const o = this.requireOpen();
    this.listeners.add(onEvent);
    const stop = new AbortController();
    const onSignOut = () => stop.abort();
    o.stop.signal.addEventListener('abort', onSignOut, { once: true });
    void this.follow(o, onEvent, stop.signal);
    return () => {
      this.listeners.delete(onEvent);
      o.stop.signal.removeEventListener('abort', onSignOut);
      stop.abort();
    };
  }

  async safetyNumber(contact: Contact): Promise<SafetyNumber> {
    const { client } = this.requireKeys();
    try {
      const t = await client.contact(contact.identity);
      return {
        contact,
        groups: t.safetyNumber.split(' '),
        verified: t.verified,
        ...(t.pending ? { pending: { groups: t.pending.safetyNumber.split(' '), reason: explainReason(t.pending.reason) } } : {}),
      };
    } catch (err) {
      throw chatError(err, this.names, contact);
    }
  }

  async markVerified(contact: Contact): Promise<void> {
    const { client } = this.requireKeys();
    try {
      await client.verifyContact(contact.identity);
    } catch (err) {
      throw chatError(err, this.names, contact);
    }
  }

  async acceptKeyChange(contact: Contact): Promise<void> {
    const { client } = this.requireKeys();
    try {
      await client.acceptKeyChange(contact.identity);
    } catch (err) {
      throw chatError(err, this.names, contact);
    }
    this.reported.delete(contact.identity);
  }

  async backup(password: string): Promise<void> {
    const { client } = this.requireKeys();
    if (password === '') {
      throw new ChatError('Type a password for the backup.');
    }
    try {
      await client.backupPrivateKey(password);
    } catch (err) {
      throw chatError(err, this.names);
    }
  }

  async restore(password: string): Promise<void> {
    const { client, session } = this.requireOpen();
    if (client.hasPrivateKey) {
      throw new ChatError('This browser holds your keys already: there is nothing to restore.');
    }
    try {
      await client.restorePrivateKey(password);
    } catch (err) {
      if (hasKind(err, UmbraErrorKind.NoBackup)) {
        throw new ChatError(`${session.name} has no backup: back the keys up on the device that holds them first.`, { cause: err });
      }
      throw chatError(err, this.names);
    }
    session.needsRestore = false;
  }

  // ---- the subscription ----

  /** Reads the inbox from its saved cursor until signal aborts, handing each item to onEvent. */
  private async follow(o: Open, onEvent: (event: ChatEvent) => void, signal: AbortSignal): Promise<void> {
    const cursorKey = `umbra.inbox-cursor.${o.session.identity}`;
    let after = savedCursor(cursorKey);
    while (!signal.aborted) {
      try {
        // The SDK's inbox resumes by itself after a lost connection, from the last item
        // taken; the cursor is also saved, so a reload picks up what came meanwhile.
        for await (const item of o.client.inbox({ ...(after === undefined ? {} : { after }), heartbeatMs, signal })) {
          if (item.item.case === 'heartbeat') {
            onEvent({ type: 'connection', state: 'live' });
          } else if (o.session.needsRestore) {
            // Nothing can be read before the keys are restored; the history has it all.
          } else {
            const e = await this.eventOf(o, item);
            if (e && !signal.aborted) onEvent(e);
          }
          after = item.inboxSequence;
          localStorage.setItem(cursorKey, after.toString());
        }
      } catch (err) {
        if (signal.aborted) return;
        onEvent({ type: 'connection', state: 'reconnecting' });
        if (hasCode(err, Code.INVALID_ARGUMENT)) {
          // A saved cursor the server does not know (another data folder): go live.
          after = undefined;
          localStorage.removeItem(cursorKey);
        }
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }

  /** What an inbox item means to the chat, if anything. */
  private async eventOf(o: Open, item: InboxItem): Promise<ChatEvent | undefined> {
    if (item.item.case === 'event') {
      return groupEvent(item) ? { type: 'groups-changed' } : undefined;
    }
    if (item.item.case !== 'message') {
      return undefined;
    }
    const m = item.item.value;
    let conversation: Conversation | undefined;
    if (m.conversationId.startsWith('g_')) {
      conversation = { kind: 'group', group: this.groupSummaries.get(m.conversationId) ?? this.summary(m.conversationId, 0, 0n, 0) };
    } else {
      // The user's own messages come back too (for their other devices); their peer is
      // known once the chat has sent or read in the conversation.
      const peer = m.sender !== o.session.identity ? m.sender : this.directPeers.get(m.conversationId);
      if (!peer) return undefined;
      this.directPeers.set(m.conversationId, peer);
      conversation = { kind: 'direct', contact: { identity: peer, name: this.names.get(peer) ?? peer } };
    }
    return { type: 'message', conversation, message: await this.read(m) };
  }

  /** Decrypts and verifies a stored message; one that does not open says why, in its text. */
  private async read(m: StoredMessage): Promise<ChatMessage> {
    const { client, session } = this.requireOpen();
    let text: string;
    let failed = false;
    try {
      text = fromUtf8.decode(await client.openMessage(m));
    } catch (err) {
      failed = true;
      text = `This message could not be opened: ${chatError(err, this.names).message}`;
    }
    return {
      conversationId: m.conversationId,
      sequence: Number(m.sequence),
      sender: m.sender,
      senderName: this.names.get(m.sender) ?? m.sender,
      mine: m.sender === session.identity,
      text,
      failed,
      sentAt: m.serverTime ? timestampDate(m.serverTime) : new Date(0),
    };
  }

  /** Tells the screens about a key change the SDK met, with the safety number of the new key. */
  private async reportKeyChange(change: KeyChangedError): Promise<void> {
    const o = this.open;
    const newCard = toHex(change.newCardId);
    if (!o || !o.client.hasPrivateKey || this.reported.get(change.identity) === newCard) return;
    this.reported.set(change.identity, newCard);
    try {
      const card = await o.client.cardById(change.newCardId);
      const mine = o.client.current().kp.signingPublicKey;
      const contact = { identity: change.identity, name: this.names.get(change.identity) ?? change.identity };
      const groups = computeSafetyNumber(o.session.identity, mine, change.identity, card.signingKey).split(' ');
      const event: ChatEvent = {
        type: 'key-change',
        change: { contact, newSafetyNumber: { contact, groups, verified: false }, reason: explainReason(change.reason) },
      };
      for (const l of this.listeners) l(event);
    } catch {
      // The notice comes again with the next call that meets the change.
      this.reported.delete(change.identity);
    }
  }

  // ---- helpers ----

  private summary(id: string, memberCount: number, epoch: bigint, role: number): GroupSummary {
    const known = this.groupSummaries.get(id);
    const s: GroupSummary = {
      id,
      name: this.names.get(id) ?? known?.name ?? id,
      memberCount: memberCount || known?.memberCount || 0,
      epoch: Number(epoch) || known?.epoch || 0,
      // GroupRole: 1 owner, 2 admin, 3 member.
      myRole: ['member', 'owner', 'admin', 'member'][role] ?? 'member',
    };
    this.groupSummaries.set(id, s);
    return s;
  }

  private requireOpen(): Open {
    if (!this.open) {
      throw new ChatError('Not signed in.');
    }
    return this.open;
  }

  /** What the calls that use the keys need: on a new device, the keys restored first. */
  private requireKeys(): Open {
    const o = this.requireOpen();
    if (o.session.needsRestore) {
      throw new ChatError('Your keys are not in this browser yet: restore them from your backup (Restore keys).');
    }
    return o;
  }

  /** /dev/sign-in: the name's identity and a fresh access token. */
  private devSignIn(name: string): Promise<{ name: string; identity: string; accessToken: string }> {
    return this.dev('POST', '/dev/sign-in', { name });
  }

  /** One call to umbra dev's development routes (no token: they play the app backend). */
  private async dev<T>(method: string, path: string, body?: unknown): Promise<T> {
    let resp: Response;
    try {
      resp = await fetch(this.base + path, {
        method,
        headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (err) {
      throw new ChatError('Cannot reach umbra dev: is it running?', { cause: err });
    }
    const text = await resp.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new ChatError(`${method} ${path}: ${resp.status} ${resp.statusText}`);
    }
    if (!resp.ok) {
      const err = json as { message?: string };
      throw new ChatError(err.message ?? `${method} ${path}: ${resp.status}`);
    }
    return json as T;
  }
}

/** A protobuf Timestamp as a Date. */
function timestampDate(ts: { seconds: bigint; nanos: number }): Date {
  return new Date(Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6));
}

/** The saved inbox cursor of an identity, if any. */
function savedCursor(key: string): bigint | undefined {
  const v = localStorage.getItem(key);
  return v && /^\d+$/.test(v) ? BigInt(v) : undefined;
}

/**
 * Says what went wrong in words for the chat, keeping the SDK's error as the cause;
 * names maps identities to the names the chat knows.
 */
function chatError(err: unknown, names?: Map<string, string>, contact?: Contact): ChatError {
  if (err instanceof ChatError) return err;
  const who = contact?.name ?? 'A contact';
  let msg: string;
  if (err instanceof KeyChangedError) {
    msg = `${names?.get(err.identity) ?? err.identity}’s key changed: ${explainReason(err.reason)}. Nothing is encrypted to them until you compare the new safety number with theirs and accept it.`;
  } else if (err instanceof WrongPasswordError) {
    msg = err.erased
      ? 'Wrong password, and no attempt was left: the backup was erased. Back up again from a device that holds the keys.'
      : `Wrong password: ${err.remaining} attempt${err.remaining === 1 ? '' : 's'} left before the backup is erased.`;
  } else if (hasKind(err, UmbraErrorKind.NoCard)) {
    msg = `${who} has no keys yet: they publish them when they first sign in to the chat.`;
  } else if (err instanceof NetworkError) {
    msg = 'No answer from umbra dev: is it running?';
  } else {
    msg = err instanceof Error ? err.message : String(err);
  }
  return new ChatError(msg, { cause: err });
}
