// Membership statements (docs/wire-format.md, section 12): a hash chain of statements,
// each signed by the member who made the change; the rules of who may make which change
// (CheckMembershipChange) and the membership a verified chain yields (Membership.Apply),
// ported from pkg/e2ee group_membership.go and group_chain.go.
import { copyBytes, equalBytes, labelled, sha, toHex, unixSeconds } from "./bytes.js";
import { CardIdSize, type Card } from "./card.js";
import { E2eeErrorKind, e2eeError } from "./errors.js";
import { MembershipKind, MembershipRole, MembershipStatementContentSchema } from "./gen/umbra/envelope/v1/envelope_pb.js";
import { groupIdentityProblem, userIdentityProblem } from "./ident.js";
import type { KeyPair } from "./keys.js";
import { LabelMembershipStatementSignature } from "./labels.js";
import { encode, parseStrict } from "./proto.js";
import { verifySignature } from "./pubkey.js";

export { MembershipKind, MembershipRole };

/** Sizes and limits of membership statements. */
export const MaxMembershipStatementSize = 48 << 10;
export const MaxMembershipSubjects = 1000;

/** SignedStatement is the exact content bytes of a statement and their signature (empty for SERVICE_REMOVE). */
export interface SignedStatement {
  readonly content: Uint8Array;
  readonly signature: Uint8Array;
}

/** MembershipChange is the change a signer states. */
export interface MembershipChange {
  kind: MembershipKind;
  /** Subjects in any order; the statement lists them sorted, each once. */
  subjects?: string[];
  /** For SET_ROLE. */
  role?: MembershipRole;
  /** For ACCEPT_INVITATION: the hash of the INVITE statement. */
  invitationHash?: Uint8Array;
  /** For INVITE, in Unix seconds. */
  expiresAtUnixSeconds?: bigint;
}

/** MembershipStatement is a statement whose content parsed. */
export interface MembershipStatement {
  readonly content: Uint8Array;
  readonly signature: Uint8Array;
  /** SHA-256(content): what the next statement names. */
  readonly hash: Uint8Array;
  readonly groupId: string;
  readonly sequence: bigint;
  readonly previousHash: Uint8Array | undefined;
  readonly kind: MembershipKind;
  /** The signer's identity; "" for SERVICE_REMOVE. */
  readonly signer: string;
  readonly signerCardId: Uint8Array | undefined;
  readonly subjects: readonly string[];
  readonly role: MembershipRole;
  readonly invitationHash: Uint8Array | undefined;
  /** 0n unless INVITE. */
  readonly expiresAtUnixSeconds: bigint;
  readonly createdAtUnixSeconds: bigint;
}

/** statementSubject is the statement's one subject, or "" when it has none. */
export function statementSubject(s: MembershipStatement): string {
  return s.subjects[0] ?? "";
}

/** statementHash is the hash of a statement with these content bytes. */
export function statementHash(content: Uint8Array): Uint8Array {
  return sha(content);
}

/** kindName is a kind's short name, as in Go's messages. */
export function kindName(k: MembershipKind): string {
  const n = MembershipKind[k];
  return n === undefined ? `kind ${k}` : n;
}

function roleName(r: MembershipRole): string {
  switch (r) {
    case MembershipRole.OWNER:
      return "the owner";
    case MembershipRole.ADMIN:
      return "an admin";
    case MembershipRole.MEMBER:
      return "a member";
  }
  return "not a member";
}

function encodeStatement(groupId: string, sequence: bigint, previousHash: Uint8Array | undefined, change: MembershipChange, signer: string, signerCardId: Uint8Array | undefined, now: Date): Uint8Array {
  const subjects = [...new Set(change.subjects ?? [])].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return encode(MembershipStatementContentSchema, {
    version: 1,
    groupId,
    sequence,
    previousHash: previousHash ?? new Uint8Array(0),
    kind: change.kind,
    signer,
    signerCardId: signerCardId ?? new Uint8Array(0),
    subjects,
    role: change.role ?? MembershipRole.UNSPECIFIED,
    invitationHash: change.invitationHash ?? new Uint8Array(0),
    expiresAtUnixSeconds: change.expiresAtUnixSeconds ?? 0n,
    createdAtUnixSeconds: unixSeconds(now),
  });
}

/**
 * signMembershipStatement encodes and signs the statement of change to groupId's
 * membership by signerIdentity, whose card signerCardId holds signer's key: statement
 * sequence after the one whose hash is previousHash (none for sequence 1). The content is
 * checked as parseMembershipStatement checks it.
 */
export function signMembershipStatement(signer: KeyPair, signerCardId: Uint8Array, signerIdentity: string, groupId: string, sequence: bigint, previousHash: Uint8Array | undefined, change: MembershipChange, now: Date = new Date()): SignedStatement {
  if (change.kind === MembershipKind.SERVICE_REMOVE) {
    throw e2eeError(E2eeErrorKind.Malformed, "a SERVICE_REMOVE statement has no signer: use serviceRemoveStatement");
  }
  const content = encodeStatement(groupId, sequence, previousHash, change, signerIdentity, signerCardId, now);
  const signed = { content, signature: signer.sign(labelled(LabelMembershipStatementSignature, content)) };
  parseMembershipStatement(signed);
  return signed;
}

/** serviceRemoveStatement is the unsigned statement by which the group service removes subject. */
export function serviceRemoveStatement(groupId: string, sequence: bigint, previousHash: Uint8Array | undefined, subject: string, now: Date = new Date()): SignedStatement {
  const content = encodeStatement(groupId, sequence, previousHash, { kind: MembershipKind.SERVICE_REMOVE, subjects: [subject] }, "", undefined, now);
  const signed = { content, signature: new Uint8Array(0) };
  parseMembershipStatement(signed);
  return signed;
}

const subjectCounts: ReadonlyMap<MembershipKind, [number, number]> = new Map([
  [MembershipKind.CREATE, [0, MaxMembershipSubjects]],
  [MembershipKind.ADD, [1, MaxMembershipSubjects]],
  [MembershipKind.REMOVE, [1, 1]],
  [MembershipKind.BAN, [1, 1]],
  [MembershipKind.UNBAN, [1, 1]],
  [MembershipKind.LEAVE, [0, 1]],
  [MembershipKind.SET_ROLE, [1, 1]],
  [MembershipKind.TRANSFER_OWNERSHIP, [1, 1]],
  [MembershipKind.INVITE, [1, 1]],
  [MembershipKind.ACCEPT_INVITATION, [0, 0]],
  [MembershipKind.APPROVE_JOIN, [1, 1]],
  [MembershipKind.SERVICE_REMOVE, [1, 1]],
]);

/** parseMembershipStatement checks the shape of a statement (section 12.3, step 1); it does not verify the signature. */
export function parseMembershipStatement(signed: SignedStatement): MembershipStatement {
  const { content, signature: sig } = signed;
  if (content.length > MaxMembershipStatementSize) throw e2eeError(E2eeErrorKind.TooLarge, `membership statement is ${content.length} bytes; at most ${MaxMembershipStatementSize}`);
  const m = parseStrict(MembershipStatementContentSchema, content, "membership statement");
  const kind = m.kind;
  const counts = subjectCounts.get(kind);
  const mal = (msg: string) => e2eeError(E2eeErrorKind.Malformed, msg);
  if (m.version !== 1) throw mal(`membership statement version ${m.version}; this client reads version 1`);
  if (counts === undefined) throw e2eeError(E2eeErrorKind.UnknownKind, `membership statement kind ${kind} is not one this version knows`);
  if (m.sequence === 0n) throw mal("membership statement sequence 0; the first is 1");
  if (m.sequence === 1n && m.previousHash.length !== 0) throw mal("membership statement 1 names a previous statement");
  if (m.sequence > 1n && m.previousHash.length !== 32) throw mal(`previous hash of membership statement ${m.sequence} is ${m.previousHash.length} bytes; want 32`);
  if ((kind === MembershipKind.CREATE) !== (m.sequence === 1n)) throw mal(`membership statement ${m.sequence} is of kind ${kindName(kind)}: a group's chain starts with CREATE, and only there`);
  if (m.createdAtUnixSeconds <= 0n) throw mal("membership statement has no creation time");
  if (m.subjects.length < counts[0] || m.subjects.length > counts[1]) throw mal(`a ${kindName(kind)} statement names ${m.subjects.length} subjects; it takes ${counts[0]} to ${counts[1]}`);
  if ((kind === MembershipKind.SET_ROLE) !== (m.role !== MembershipRole.UNSPECIFIED)) throw mal(`a ${kindName(kind)} statement has role ${m.role}: only SET_ROLE names a role`);
  if (kind === MembershipKind.SET_ROLE && m.role !== MembershipRole.ADMIN && m.role !== MembershipRole.MEMBER) throw mal(`SET_ROLE gives role ${m.role}; it gives ADMIN or MEMBER`);
  if ((kind === MembershipKind.ACCEPT_INVITATION) !== (m.invitationHash.length !== 0)) throw mal(`a ${kindName(kind)} statement has a ${m.invitationHash.length}-byte invitation hash: only ACCEPT_INVITATION names one`);
  if (kind === MembershipKind.ACCEPT_INVITATION && m.invitationHash.length !== 32) throw mal(`invitation hash is ${m.invitationHash.length} bytes; want 32`);
  if ((kind === MembershipKind.INVITE) !== (m.expiresAtUnixSeconds !== 0n)) throw mal(`a ${kindName(kind)} statement has expiry ${m.expiresAtUnixSeconds}: only INVITE has one`);
  if (kind === MembershipKind.INVITE && m.expiresAtUnixSeconds <= m.createdAtUnixSeconds) throw mal(`the invitation expires at ${m.expiresAtUnixSeconds}, not after the statement's creation at ${m.createdAtUnixSeconds}`);
  const gp = groupIdentityProblem(m.groupId);
  if (gp !== undefined) throw mal(`membership statement group id ${gp}`);
  if (kind !== MembershipKind.SERVICE_REMOVE && m.signer === "" && m.signerCardId.length === 0 && sig.length === 0) {
    throw e2eeError(E2eeErrorKind.NotAuthorized, `a ${kindName(kind)} statement without a signer: the service states only SERVICE_REMOVE, never an addition or any other change`);
  }
  if (kind === MembershipKind.SERVICE_REMOVE) {
    if (m.signer !== "" || m.signerCardId.length !== 0 || sig.length !== 0) throw mal("a SERVICE_REMOVE statement has a signer, card or signature: the service signs nothing");
  } else {
    const sp = userIdentityProblem(m.signer);
    if (sp !== undefined) throw mal(`membership statement signer ${sp}`);
    if (m.signerCardId.length !== CardIdSize) throw mal(`membership statement signer card id is ${m.signerCardId.length} bytes; want 32`);
    if (sig.length !== 64) throw mal(`membership statement signature is ${sig.length} bytes; want 64`);
  }
  m.subjects.forEach((s, i) => {
    const p = userIdentityProblem(s);
    if (p !== undefined) throw mal(`membership statement subject ${p}`);
    if (i > 0 && s <= m.subjects[i - 1]!) throw mal(`membership statement subjects are not in strictly ascending order at ${i}`);
    if (s === m.signer) throw mal(`a ${kindName(kind)} statement names its signer ${s} as a subject`);
  });
  const c = copyBytes(content);
  return {
    content: c,
    signature: copyBytes(sig),
    hash: sha(c),
    groupId: m.groupId,
    sequence: m.sequence,
    previousHash: m.previousHash.length === 0 ? undefined : copyBytes(m.previousHash),
    kind,
    signer: m.signer,
    signerCardId: m.signerCardId.length === 0 ? undefined : copyBytes(m.signerCardId),
    subjects: [...m.subjects],
    role: m.role,
    invitationHash: m.invitationHash.length === 0 ? undefined : copyBytes(m.invitationHash),
    expiresAtUnixSeconds: m.expiresAtUnixSeconds,
    createdAtUnixSeconds: m.createdAtUnixSeconds,
  };
}

/**
 * verifyMembershipStatement parses signed and checks that it is of groupId
 * (WrongGroup), that signer is the card it names and a card of its signer
 * (WrongSender), and that the card's key signed it (BadSignature). signer is undefined
 * for SERVICE_REMOVE. The card's lifetime and the signer's authority are the caller's
 * (the lifetime check) and checkMembershipChange's.
 */
export function verifyMembershipStatement(signed: SignedStatement, groupId: string, signer: Card | undefined): MembershipStatement {
  const st = parseMembershipStatement(signed);
  if (st.groupId !== groupId) throw e2eeError(E2eeErrorKind.WrongGroup, `membership statement ${st.sequence} is of group ${st.groupId}, not ${groupId}`);
  if (st.kind === MembershipKind.SERVICE_REMOVE) return st;
  if (signer === undefined || signer.signingKey.length !== 32) throw e2eeError(E2eeErrorKind.WrongSender, `no signer card to verify membership statement ${st.sequence} with`);
  if (!equalBytes(st.signerCardId!, signer.id)) throw e2eeError(E2eeErrorKind.WrongSender, `membership statement ${st.sequence} names signer card ${toHex(st.signerCardId!)}, not ${toHex(signer.id)}`);
  if (signer.identity !== st.signer) throw e2eeError(E2eeErrorKind.WrongSender, `membership statement ${st.sequence} is signed by ${st.signer} with a card of ${signer.identity}`);
  if (!verifySignature(signer.signingKey, labelled(LabelMembershipStatementSignature, st.content), st.signature)) {
    throw e2eeError(E2eeErrorKind.BadSignature, `membership statement ${st.sequence} signature does not verify with card ${toHex(signer.id)}`);
  }
  return st;
}

/** MembershipState is the membership a statement is checked against. */
export interface MembershipState {
  role(identity: string): MembershipRole;
  banned(identity: string): boolean;
  invitation(identity: string): { hash: Uint8Array; expiresAtUnixSeconds: bigint } | undefined;
  memberCount(): number;
}

/**
 * checkMembershipChange checks that st's signer may make st's change in state
 * (NotAuthorized) and that the change fits it (InvalidChange), as pkg/e2ee's
 * CheckMembershipChange. It does not check the chain position.
 */
export function checkMembershipChange(state: MembershipState, st: MembershipStatement): void {
  const signer = state.role(st.signer);
  const manager = signer === MembershipRole.OWNER || signer === MembershipRole.ADMIN;
  const subject = statementSubject(st);
  const role = state.role(subject);
  const what = `statement ${st.sequence} (${kindName(st.kind)})`;
  const needs = (ok: boolean, who: string) => {
    if (!ok) throw e2eeError(E2eeErrorKind.NotAuthorized, `${what}: ${st.signer} is ${roleName(signer)} in the group; ${who}`);
  };
  const invalid = (msg: string) => e2eeError(E2eeErrorKind.InvalidChange, `${what}: ${msg}`);
  const checkTarget = () => {
    if (role === MembershipRole.OWNER) throw e2eeError(E2eeErrorKind.NotAuthorized, `${what}: ${subject} is the owner, whom nobody removes or bans`);
    if (role === MembershipRole.ADMIN && signer !== MembershipRole.OWNER) needs(false, "only the owner removes or bans an admin");
  };
  const joinable = (id: string) => {
    if (state.role(id) !== MembershipRole.UNSPECIFIED) throw invalid(`${id} is a member already`);
    if (state.banned(id)) throw invalid(`${id} is banned`);
  };
  switch (st.kind) {
    case MembershipKind.CREATE:
      if (state.memberCount() !== 0) throw invalid("the group exists already");
      return;
    case MembershipKind.ADD:
    case MembershipKind.APPROVE_JOIN:
    case MembershipKind.INVITE:
      needs(manager, "only an admin or the owner adds, approves or invites");
      st.subjects.forEach(joinable);
      return;
    case MembershipKind.REMOVE:
      needs(manager, "only an admin or the owner removes members");
      if (role === MembershipRole.UNSPECIFIED) throw invalid(`${subject} is not a member`);
      return checkTarget();
    case MembershipKind.BAN:
      needs(manager, "only an admin or the owner bans");
      if (state.banned(subject)) throw invalid(`${subject} is banned already`);
      return checkTarget();
    case MembershipKind.UNBAN:
      needs(manager, "only an admin or the owner lifts bans");
      if (!state.banned(subject)) throw invalid(`${subject} is not banned`);
      return;
    case MembershipKind.LEAVE: {
      needs(signer !== MembershipRole.UNSPECIFIED, "only a member leaves");
      const successor = signer === MembershipRole.OWNER && state.memberCount() > 1;
      if (successor && (subject === "" || role === MembershipRole.UNSPECIFIED)) throw invalid("the owner leaves without naming a member as the new owner");
      if (!successor && subject !== "") throw invalid("names a new owner, but only an owner who leaves others behind does");
      return;
    }
    case MembershipKind.SET_ROLE:
      needs(signer === MembershipRole.OWNER, "only the owner sets roles");
      if (role === MembershipRole.UNSPECIFIED) throw invalid(`${subject} is not a member`);
      if (role === st.role) throw invalid(`${subject} is ${roleName(role)} already`);
      return;
    case MembershipKind.TRANSFER_OWNERSHIP:
      needs(signer === MembershipRole.OWNER, "only the owner transfers ownership");
      if (role === MembershipRole.UNSPECIFIED) throw invalid(`${subject} is not a member`);
      return;
    case MembershipKind.ACCEPT_INVITATION: {
      const inv = state.invitation(st.signer);
      if (inv === undefined || st.invitationHash === undefined || !equalBytes(inv.hash, st.invitationHash)) {
        throw e2eeError(E2eeErrorKind.NotAuthorized, `${what}: ${st.signer} has no pending invitation ${st.invitationHash ? toHex(st.invitationHash) : ""}`);
      }
      if (!(st.createdAtUnixSeconds < inv.expiresAtUnixSeconds)) throw invalid(`the invitation expired at ${new Date(Number(inv.expiresAtUnixSeconds) * 1000).toISOString()}`);
      return joinable(st.signer);
    }
    case MembershipKind.SERVICE_REMOVE:
      if (role === MembershipRole.UNSPECIFIED) throw invalid(`${subject} is not a member`);
      if (role === MembershipRole.OWNER) throw e2eeError(E2eeErrorKind.NotAuthorized, `${what}: the service may not remove the owner ${subject}`);
      return;
    default:
      throw e2eeError(E2eeErrorKind.UnknownKind, `statement ${st.sequence}: kind ${st.kind}`);
  }
}

/**
 * Membership is a group's membership as a verified chain of statements yields it: who
 * is a member with which role, who is banned, who has a pending invitation, and who was
 * a member at each statement. Start with new Membership(groupId) and apply every
 * statement from the group's creation, in order.
 */
export class Membership implements MembershipState {
  readonly groupId: string;
  private hashes: Uint8Array[] = [];
  private roles = new Map<string, MembershipRole>();
  private bans = new Set<string>();
  private invites = new Map<string, { hash: Uint8Array; expiresAtUnixSeconds: bigint }>();
  /** Per identity: pairs (from, to) of statements it was a member from and until (to = 0n while it is). */
  private spans = new Map<string, bigint[]>();

  constructor(groupId: string) {
    this.groupId = groupId;
  }

  /** sequence is the sequence of the last statement applied (the head); 0n before the first. */
  get sequence(): bigint {
    return BigInt(this.hashes.length);
  }
  /** head is the hash of the last statement applied, undefined before the first. */
  get head(): Uint8Array | undefined {
    return this.hashes[this.hashes.length - 1];
  }
  /** hashAt is the hash of statement sequence, undefined if the chain has none. */
  hashAt(sequence: bigint): Uint8Array | undefined {
    return sequence === 0n || sequence > this.sequence ? undefined : this.hashes[Number(sequence) - 1];
  }
  role(identity: string): MembershipRole {
    return this.roles.get(identity) ?? MembershipRole.UNSPECIFIED;
  }
  banned(identity: string): boolean {
    return this.bans.has(identity);
  }
  invitation(identity: string): { hash: Uint8Array; expiresAtUnixSeconds: bigint } | undefined {
    return this.invites.get(identity);
  }
  memberCount(): number {
    return this.roles.size;
  }
  /** members returns the current members, sorted. */
  members(): string[] {
    return [...this.roles.keys()].sort();
  }
  /** owner is the current owner ("" before the CREATE statement). */
  owner(): string {
    for (const [id, r] of this.roles) if (r === MembershipRole.OWNER) return id;
    return "";
  }
  /** memberAt reports whether identity was a member once statement sequence was applied (and before the next). */
  memberAt(identity: string, sequence: bigint): boolean {
    const s = this.spans.get(identity) ?? [];
    for (let i = 0; i + 1 < s.length; i += 2) {
      if (s[i]! <= sequence && (s[i + 1] === 0n || sequence < s[i + 1]!)) return true;
    }
    return false;
  }
  /** wasMember reports whether identity was a member at any point of the chain. */
  wasMember(identity: string): boolean {
    return (this.spans.get(identity)?.length ?? 0) > 0;
  }

  /**
   * apply checks st, a statement whose signature the caller verified, and applies it: it
   * must be of this group (WrongGroup), follow the head (BrokenChain) and be a change its
   * signer may make (checkMembershipChange). Nothing changes when it fails.
   */
  apply(st: MembershipStatement): void {
    if (st.groupId !== this.groupId) throw e2eeError(E2eeErrorKind.WrongGroup, `membership statement ${st.sequence} is of group ${st.groupId}, not ${this.groupId}`);
    if (st.sequence !== this.sequence + 1n) throw e2eeError(E2eeErrorKind.BrokenChain, `membership statement ${st.sequence} follows statement ${this.sequence}: a statement is missing, repeated or out of order`);
    const head = this.head;
    if (!(head === undefined ? st.previousHash === undefined : st.previousHash !== undefined && equalBytes(st.previousHash, head))) {
      throw e2eeError(E2eeErrorKind.BrokenChain, `membership statement ${st.sequence} does not name statement ${this.sequence}'s hash`);
    }
    checkMembershipChange(this, st);
    const seq = st.sequence;
    const join = (id: string, r: MembershipRole) => {
      this.roles.set(id, r);
      this.invites.delete(id);
      this.spans.set(id, [...(this.spans.get(id) ?? []), seq, 0n]);
    };
    const leave = (id: string) => {
      this.roles.delete(id);
      const s = this.spans.get(id)!;
      s[s.length - 1] = seq;
    };
    const subject = statementSubject(st);
    switch (st.kind) {
      case MembershipKind.CREATE:
        join(st.signer, MembershipRole.OWNER);
        st.subjects.forEach((id) => join(id, MembershipRole.MEMBER));
        break;
      case MembershipKind.ADD:
      case MembershipKind.APPROVE_JOIN:
        st.subjects.forEach((id) => join(id, MembershipRole.MEMBER));
        break;
      case MembershipKind.ACCEPT_INVITATION:
        join(st.signer, MembershipRole.MEMBER);
        break;
      case MembershipKind.REMOVE:
      case MembershipKind.SERVICE_REMOVE:
        leave(subject);
        break;
      case MembershipKind.BAN:
        if (this.role(subject) !== MembershipRole.UNSPECIFIED) leave(subject);
        this.bans.add(subject);
        this.invites.delete(subject);
        break;
      case MembershipKind.UNBAN:
        this.bans.delete(subject);
        break;
      case MembershipKind.LEAVE:
        leave(st.signer);
        if (subject !== "") this.roles.set(subject, MembershipRole.OWNER);
        break;
      case MembershipKind.SET_ROLE:
        this.roles.set(subject, st.role);
        break;
      case MembershipKind.TRANSFER_OWNERSHIP:
        this.roles.set(subject, MembershipRole.OWNER);
        this.roles.set(st.signer, MembershipRole.ADMIN);
        break;
      case MembershipKind.INVITE:
        this.invites.set(subject, { hash: st.hash, expiresAtUnixSeconds: st.expiresAtUnixSeconds });
        break;
    }
    this.hashes.push(st.hash);
  }

  /** clone returns a copy that later statements applied to this one do not change. */
  clone(): Membership {
    const c = new Membership(this.groupId);
    c.hashes = [...this.hashes];
    c.roles = new Map(this.roles);
    c.bans = new Set(this.bans);
    c.invites = new Map(this.invites);
    c.spans = new Map([...this.spans].map(([k, v]) => [k, [...v]]));
    return c;
  }
}
