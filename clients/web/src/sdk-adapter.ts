// The web chat's one door to Umbra. The screens call only ChatAdapter; DevChatAdapter
// implements it over the development sign-in of `umbra dev` and the REST API, for what
// needs no cryptography (sign-in, whoami, the contact directory, the group list).
// Everything that encrypts, decrypts, verifies or holds keys goes through
// @umbra-e2ee/sdk, and throws NotWiredError until the SDK is wired in here.

/** A signed-in user of the development app. */
export interface Session {
  /** The name typed at sign-in: the app's own user id (`umbra login NAME`'s NAME). */
  name: string;
  /** The opaque Umbra identity ("u_..."). */
  identity: string;
  accessToken: string;
  expiresAt: Date;
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
  /** What the chat shows: the app's name for the group, or its identity. */
  name: string;
  memberCount: number;
  epoch: number;
  myRole: string;
}

/** Which conversation: with one contact, or a group's. */
export type Conversation =
  | { kind: 'direct'; contact: Contact }
  | { kind: 'group'; group: GroupSummary };

/** One message, decrypted and verified by the SDK. */
export interface ChatMessage {
  /** The client message id (idempotent sends). */
  id: string;
  /** The conversation's sequence number, for ordering and resuming. */
  sequence: number;
  /** The sender's identity, and name where the chat knows it. */
  sender: string;
  senderName: string;
  mine: boolean;
  text: string;
  sentAt: Date;
}

/** A contact's safety number, to compare with theirs out of band. */
export interface SafetyNumber {
  contact: Contact;
  /** Twelve groups of five digits, as `umbra trust show` prints them. */
  groups: string[];
  verified: boolean;
}

/** A contact whose key changed: nothing is encrypted to them until the user accepts. */
export interface KeyChange {
  contact: Contact;
  newSafetyNumber: SafetyNumber;
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
  /** Signs in as a typed name (development only: `umbra dev`'s /dev/sign-in). */
  signIn(name: string): Promise<Session>;
  /** Forgets the session and any keys unlocked in memory. */
  signOut(): void;
  /** A valid access token, renewed when it is about to expire: the SDK's token provider. */
  accessToken(): Promise<string>;
  /** What the server says the token is. */
  whoami(): Promise<{ identity: string; appId: string; expiresAt: Date }>;
  /** The other users of the development app. */
  listContacts(): Promise<Contact[]>;
  /** A contact by name (someone who has not used the web chat, e.g. a CLI user). */
  findContact(name: string): Promise<Contact>;
  listGroups(): Promise<GroupSummary[]>;
  createGroup(name: string, members: Contact[]): Promise<GroupSummary>;
  /** Older messages of a conversation, oldest first. */
  history(conversation: Conversation, before?: number): Promise<ChatMessage[]>;
  send(conversation: Conversation, text: string): Promise<ChatMessage>;
  /** Delivers events until the returned function is called; resumes by itself. */
  subscribe(onEvent: (event: ChatEvent) => void): () => void;
  safetyNumber(contact: Contact): Promise<SafetyNumber>;
  /** Marks a contact verified after comparing safety numbers. */
  markVerified(contact: Contact): Promise<void>;
  /** Accepts a contact's new key after a key change. */
  acceptKeyChange(contact: Contact): Promise<void>;
  /** Backs the user's private keys up under a password (OPRF + Argon2id). */
  backup(password: string): Promise<void>;
  /** Restores the user's private keys from a backup on this device. */
  restore(password: string): Promise<void>;
}

/** An error the chat shows as it is. */
export class ChatError extends Error {
  constructor(
    message: string,
    readonly code?: number,
  ) {
    super(message);
    this.name = 'ChatError';
  }
}

/** What is waiting for @umbra-e2ee/sdk. */
export class NotWiredError extends ChatError {
  constructor(what: string) {
    super(`${what}: not wired yet (the encrypted part of the chat waits for @umbra-e2ee/sdk)`);
    this.name = 'NotWiredError';
  }
}

/** An Argon2id implementation (the worker's), for the SDK's keystore and backups. */
export type Argon2id = (params: Argon2idParams) => Promise<Uint8Array>;

/** Renew a token this long before it expires. */
const renewBeforeMs = 60_000;

/** ChatAdapter over `umbra dev`'s development sign-in and the REST API of base. */
export class DevChatAdapter implements ChatAdapter {
  private session: Session | undefined;

  constructor(
    private readonly argon2id: Argon2id,
    private readonly base = '',
  ) {}

  /** The current session, if signed in. */
  get current(): Session | undefined {
    return this.session;
  }

  /** Resumes a session kept by the page (sessionStorage); an expired token is renewed on first use. */
  resume(saved: Session): void {
    this.session = saved;
  }

  async signIn(name: string): Promise<Session> {
    const body = await this.call<{ name: string; identity: string; accessToken: string; expiresAt: string }>(
      'POST',
      '/dev/sign-in',
      { name },
      false,
    );
    this.session = {
      name: body.name,
      identity: body.identity,
      accessToken: body.accessToken,
      expiresAt: new Date(body.expiresAt),
    };
    return this.session;
  }

  signOut(): void {
    this.session = undefined;
  }

  async accessToken(): Promise<string> {
    const s = this.requireSession();
    if (s.expiresAt.getTime() - Date.now() < renewBeforeMs) {
      return (await this.signIn(s.name)).accessToken;
    }
    return s.accessToken;
  }

  async whoami(): Promise<{ identity: string; appId: string; expiresAt: Date }> {
    const body = await this.call<{ identity: string; appId: string; expiresAt: string }>('GET', '/v1/whoami');
    return { identity: body.identity, appId: body.appId, expiresAt: new Date(body.expiresAt) };
  }

  async listContacts(): Promise<Contact[]> {
    const me = this.requireSession().identity;
    const body = await this.call<{ users: Contact[] }>('GET', '/dev/users', undefined, false);
    return body.users.filter((u) => u.identity !== me);
  }

  async findContact(name: string): Promise<Contact> {
    const body = await this.call<{ users: Contact[] }>('POST', '/dev/resolve', { names: [name] }, false);
    const found = body.users[0];
    if (!found) {
      throw new ChatError(`no user named ${name}`);
    }
    return found;
  }

  async listGroups(): Promise<GroupSummary[]> {
    // The server's list of the user's groups: metadata only (no names, no keys). The
    // SDK verifies each group's signed membership before the chat encrypts to it.
    const body = await this.call<{
      groups: { groupId: string; memberCount: number; epoch: string; myRole: string }[];
    }>('GET', '/v1/groups');
    return body.groups.map((g) => ({
      id: g.groupId,
      name: g.groupId,
      memberCount: g.memberCount,
      epoch: Number(g.epoch),
      myRole: g.myRole.replace(/^GROUP_ROLE_/, '').toLowerCase(),
    }));
  }

  createGroup(_name: string, _members: Contact[]): Promise<GroupSummary> {
    return Promise.reject(new NotWiredError('Creating a group'));
  }

  history(_conversation: Conversation, _before?: number): Promise<ChatMessage[]> {
    return Promise.reject(new NotWiredError('Reading messages'));
  }

  send(_conversation: Conversation, _text: string): Promise<ChatMessage> {
    return Promise.reject(new NotWiredError('Sending'));
  }

  subscribe(onEvent: (event: ChatEvent) => void): () => void {
    // Until the SDK's subscription is wired, the only event is that nothing is live.
    queueMicrotask(() => onEvent({ type: 'connection', state: 'reconnecting' }));
    return () => {};
  }

  safetyNumber(_contact: Contact): Promise<SafetyNumber> {
    return Promise.reject(new NotWiredError('Safety numbers'));
  }

  markVerified(_contact: Contact): Promise<void> {
    return Promise.reject(new NotWiredError('Verifying a contact'));
  }

  acceptKeyChange(_contact: Contact): Promise<void> {
    return Promise.reject(new NotWiredError('Accepting a key change'));
  }

  backup(_password: string): Promise<void> {
    // The SDK will be given this.argon2id, which runs in a Web Worker.
    void this.argon2id;
    return Promise.reject(new NotWiredError('Key backup'));
  }

  restore(_password: string): Promise<void> {
    return Promise.reject(new NotWiredError('Key restore'));
  }

  private requireSession(): Session {
    if (!this.session) {
      throw new ChatError('not signed in');
    }
    return this.session;
  }

  /** One JSON call; with auth, the session's token goes with it. */
  private async call<T>(method: string, path: string, body?: unknown, auth = true): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
    }
    if (auth) {
      headers['Authorization'] = `Bearer ${await this.accessToken()}`;
    }
    let resp: Response;
    try {
      resp = await fetch(this.base + path, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch {
      throw new ChatError('cannot reach umbra dev: is it running?');
    }
    const text = await resp.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new ChatError(`${method} ${path}: ${resp.status} ${resp.statusText}`);
    }
    if (!resp.ok) {
      const err = json as { message?: string; code?: number };
      throw new ChatError(err.message ?? `${method} ${path}: ${resp.status}`, err.code);
    }
    return json as T;
  }
}
