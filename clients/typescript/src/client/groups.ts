// Groups (pkg/sdk group.go, group_chain.go, group_epoch.go, group_message.go): the
// membership flows, each change a statement signed after the head of the chain this
// client verified (and signed again on MembershipConflict); epochs committed for the
// members the verified chain yields, wrapped only to their trusted cards, and rotated by
// themselves when the service asks (EpochRequired); epoch keys accepted only from
// commits signed by a member at a head of the verified chain; group messages.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { equalBytes } from "../bytes.js";
import type { Card } from "../card.js";
import { E2eeErrorKind, e2eeError } from "../errors.js";
import {
  CommitMismatchSchema,
  EncryptionMode,
  EpochConflictSchema,
  EpochRequiredSchema,
  GroupEventKind,
  GroupService,
  HistoryVisibility,
  MembershipConflictSchema,
  type EpochCommit as EpochCommitProto,
  type EpochKey,
  type EpochShareSchema,
  type GetEpochStateResponse,
  type Group as GroupInfo,
  type GroupRole,
  type Invitation,
  type JoinRequest,
  type LeaveGroupResponse,
  type MemberKeySchema,
  type RotationPolicySchema,
} from "../gen/umbra/group/v1/group_pb.js";
import { MessageKind, type Message, type SendResponse, type SubscribeResponse } from "../gen/umbra/messaging/v1/messaging_pb.js";
import { newEpoch, openEpochKey, parseEpochCommit, verifyEpochCommit, wrapEpochKey, type EpochCommit, type MembershipHead, type SignedCommit } from "../group-epoch.js";
import {
  Membership,
  MembershipKind,
  MembershipRole,
  parseMembershipStatement,
  signMembershipStatement,
  verifyMembershipStatement,
  type MembershipChange,
  type MembershipStatement,
  type SignedStatement,
} from "../group-membership.js";
import { inspectGroupMessage, openGroupMessage, sealGroupMessage, type GroupMessageInfo } from "../group-message.js";
import { Code, hasCode, statusDetail } from "../transport/errors.js";
import { hexId, notActiveHere, unixDate, type UmbraClient, type VerifiedCard } from "./client.js";
import { UmbraErrorKind, umbraError } from "./errors.js";
import { groupEvent, newClientMessageId, send } from "./messaging.js";

/** How often a membership change is signed again after MembershipConflict. */
const membershipAttempts = 4;
/** How often a rotation refetches the members and cards after CommitMismatch. */
const rotationAttempts = 4;
/** How often send re-encrypts after the service asked for another epoch. */
const sendAttempts = 5;
/** The most wrapped keys one StageEpochKeys or CommitEpoch carries. */
const commitChunk = 500;
/** The service's default invitation lifetime, which invite states explicitly. */
const defaultInvitationTtlMs = 7 * 24 * 3600_000;

/** A small async mutex: one holder at a time, in order. */
class Lock {
  #tail: Promise<void> = Promise.resolve();
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.#tail;
    let release!: () => void;
    this.#tail = new Promise((ok) => (release = ok));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

/** What the client knows of one group: the verified chain, the epoch keys and commits. */
interface GroupState {
  chain: Membership;
  chainLock: Lock;
  keys: Map<bigint, Uint8Array>;
  commitHashes: Map<bigint, Uint8Array>;
  /** vouched[e]: the hash of epoch e's commit as the verified commit of e+1 names it. */
  vouched: Map<bigint, Uint8Array>;
  /** The membership head each verified commit names, by epoch. */
  heads: Map<bigint, MembershipHead>;
  current: bigint;
  rotationRequired: boolean;
  mode: EncryptionMode;
}

/** GroupStates is a client's state of its groups. */
export class GroupStates {
  readonly #groups = new Map<string, GroupState>();

  get(groupId: string): GroupState {
    let s = this.#groups.get(groupId);
    if (!s) {
      s = {
        chain: new Membership(groupId),
        chainLock: new Lock(),
        keys: new Map(),
        commitHashes: new Map(),
        vouched: new Map(),
        heads: new Map(),
        current: 0n,
        rotationRequired: false,
        mode: EncryptionMode.UNSPECIFIED,
      };
      this.#groups.set(groupId, s);
    }
    return s;
  }

  forget(groupId: string): void {
    this.#groups.delete(groupId);
  }
}

function accept(s: GroupState, c: EpochCommit): void {
  s.commitHashes.set(c.epoch, c.hash);
  s.heads.set(c.epoch, c.membership);
  if (c.epoch > 1n && c.previousCommitHash) s.vouched.set(c.epoch - 1n, c.previousCommitHash);
}

/** The options of a new group. */
export interface CreateGroupOptions {
  /** Members besides the creator, who becomes the owner: up to 1,000 identities. */
  readonly members?: readonly string[];
  /** Defaults to REQUIRED. */
  readonly encryptionMode?: EncryptionMode;
  /** Defaults to SINCE_JOIN. */
  readonly historyVisibility?: HistoryVisibility;
  /** The server's default if absent. */
  readonly rotationPolicy?: MessageInitShape<typeof RotationPolicySchema>;
}

/** The signer cards fetched while verifying one batch, each checked once. */
type SignerCards = Map<string, VerifiedCard>;

async function signerCard(c: UmbraClient, cards: SignerCards | undefined, id: Uint8Array, signal?: AbortSignal): Promise<VerifiedCard> {
  const have = cards?.get(hexId(id));
  if (have) return have;
  const card = await c.cardById(id, signal);
  await c.trustSender(card, signal);
  cards?.set(hexId(id), card);
  return card;
}

function chainError(msg: string, cause?: unknown): Error {
  return umbraError(UmbraErrorKind.MembershipChain, msg, cause);
}

function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Group is the user's handle on one group: its membership calls, and encrypting,
 * decrypting and sending its messages. Handles are cheap; what the client knows of the
 * group (keys, verified chain) is kept per client and shared by every handle.
 */
export class Group {
  readonly client: UmbraClient;
  readonly id: string;

  constructor(client: UmbraClient, id: string) {
    this.client = client;
    this.id = id;
  }

  get #state(): GroupState {
    return this.client.groups.get(this.id);
  }

  /** The group with its members (and bans, for admins and the owner): the service's word. */
  async info(signal?: AbortSignal): Promise<GroupInfo> {
    const resp = await this.client.transport.unary(GroupService.method.getGroup, { groupId: this.id }, { signal });
    this.observe(resp.group);
    return resp.group!;
  }

  /** @internal Records what a reply says about the group: its mode and epoch. */
  observe(info: GroupInfo | undefined): void {
    if (!info) return;
    const s = this.#state;
    s.mode = info.encryptionMode;
    if (info.epoch >= s.current) {
      s.current = info.epoch;
      s.rotationRequired = info.rotationRequired;
    }
  }

  /** The encryption mode as the client last saw it (UNSPECIFIED if it has not yet). */
  get encryptionMode(): EncryptionMode {
    return this.#state.mode;
  }

  /** Deletes the group. Owner only. */
  async delete(signal?: AbortSignal): Promise<void> {
    await this.client.transport.unary(GroupService.method.deleteGroup, { groupId: this.id }, { signal });
    this.client.groups.forget(this.id);
  }

  // ---- the membership chain ----

  /**
   * The membership as the chain of signed statements yields it, verified by this client
   * from the group's creation: what epoch keys are wrapped to (unlike info's member list,
   * the service's word). Only statements after those verified before are fetched. The
   * result is a copy.
   */
  async membership(signal?: AbortSignal): Promise<Membership> {
    return this.#withChain(0n, undefined, true, (m) => m.clone(), signal);
  }

  async #withChain<T>(sequence: bigint, hash: Uint8Array | undefined, sync: boolean, fn: (m: Membership) => T, signal?: AbortSignal): Promise<T> {
    const s = this.#state;
    return s.chainLock.run(async () => {
      const m = s.chain;
      const at = m.hashAt(sequence);
      if (sync || m.sequence < sequence || (hash !== undefined && !(at && equalBytes(at, hash)))) {
        await this.#syncChain(m, signal);
      }
      return fn(m);
    });
  }

  async #syncChain(m: Membership, signal?: AbortSignal): Promise<void> {
    let req: { groupId: string; afterSequence?: bigint; pageToken?: string } = { groupId: this.id, afterSequence: m.sequence };
    for (;;) {
      let resp;
      try {
        resp = await this.client.transport.unary(GroupService.method.getMembershipChain, req, { signal });
      } catch (e) {
        if (hasCode(e, Code.PERMISSION_DENIED)) throw e2eeError(E2eeErrorKind.NotMember, e.rawMessage, e);
        throw e;
      }
      const myHead = m.head ?? new Uint8Array(0);
      if (resp.headSequence < m.sequence || (resp.headSequence === m.sequence && !equalBytes(resp.headHash, myHead))) {
        throw chainError(
          `the service's head is statement ${resp.headSequence} (${hexId(resp.headHash)}); this client verified statement ${m.sequence} (${hexId(myHead)})`,
          e2eeError(E2eeErrorKind.BrokenChain, "the service's chain contradicts the one verified before"),
        );
      }
      await this.#verifyStatements(m, resp.statements, signal);
      if (resp.nextPageToken === "") {
        if (m.sequence !== resp.headSequence || !equalBytes(m.head ?? new Uint8Array(0), resp.headHash)) {
          throw chainError(
            `the service says the head is statement ${resp.headSequence} but served the chain up to statement ${m.sequence}`,
            e2eeError(E2eeErrorKind.BrokenChain, "the served chain does not reach the head"),
          );
        }
        return;
      }
      req = { groupId: this.id, pageToken: resp.nextPageToken };
    }
  }

  /**
   * Applies signed to m in order, each checked (§12.3): its shape, its signature by the
   * card it names (a card of its signer, active when the statement was made, trusted by
   * the pins), its link to m's head, and the role rules.
   */
  async #verifyStatements(m: Membership, signed: readonly SignedStatement[], signal?: AbortSignal): Promise<void> {
    const parsed: MembershipStatement[] = [];
    const signers: string[] = [];
    signed.forEach((s, i) => {
      let st: MembershipStatement;
      try {
        st = parseMembershipStatement(s);
      } catch (e) {
        throw chainError(`the statement after ${m.sequence + BigInt(i)}: ${errMsg(e)}`, e);
      }
      parsed.push(st);
      if (st.signer !== "" && !signers.includes(st.signer)) signers.push(st.signer);
    });
    const cards = await this.#statementCards(signers, signal);
    for (let i = 0; i < parsed.length; i++) {
      const st = parsed[i]!;
      let card: VerifiedCard | undefined;
      if (st.kind !== MembershipKind.SERVICE_REMOVE) {
        card = await signerCard(this.client, cards, st.signerCardId ?? new Uint8Array(0), signal);
        try {
          this.client.checkCardLifetime(card, unixDate(st.createdAtUnixSeconds));
        } catch (e) {
          throw chainError(`statement ${st.sequence}: ${errMsg(e)}`, e);
        }
      }
      try {
        verifyMembershipStatement(signed[i]!, this.id, card);
        m.apply(st);
      } catch (e) {
        throw chainError(`statement ${st.sequence}: ${errMsg(e)}`, e);
      }
    }
  }

  /**
   * The signer cards of a batch of statements, starting with the signers' active cards,
   * fetched at once and checked against the pins (trustedCards). The user's own active
   * card is taken only if the keystore holds its key.
   */
  async #statementCards(signers: readonly string[], signal?: AbortSignal): Promise<SignerCards> {
    const out: SignerCards = new Map();
    if (signers.length === 0) return out;
    const found = await this.client.trustedCards(signers, signal);
    const ks = this.client.ks;
    for (const card of found.values()) {
      if (ks && card.identity === ks.identity && !ks.keyFor(card.id)) continue;
      out.set(hexId(card.id), card);
    }
    return out;
  }

  /**
   * Signs the statement of change after the head of the verified chain and sends it;
   * on MembershipConflict it verifies what it missed and signs again. prepare adjusts the
   * change to the verified membership, or says there is nothing to do.
   */
  async #change(
    change: MembershipChange,
    prepare: ((m: Membership, ch: MembershipChange) => boolean | Promise<boolean>) | undefined,
    sendStatement: (st: SignedStatement) => Promise<void>,
    signal?: AbortSignal,
  ): Promise<void> {
    const { ks, kp, cardId } = this.client.current();
    let last: unknown;
    for (let attempt = 0; attempt < membershipAttempts; attempt++) {
      let seq = 0n;
      let headHash: Uint8Array | undefined;
      const ch: MembershipChange = { ...change, ...(change.subjects ? { subjects: [...change.subjects] } : {}) };
      if (ch.kind !== MembershipKind.CREATE) {
        const m = await this.membership(signal);
        if (prepare && (await prepare(m, ch))) return;
        seq = m.sequence;
        headHash = m.head;
      }
      const st = signMembershipStatement(kp, cardId, ks.identity, this.id, seq + 1n, headHash, ch, this.client.cfg.now());
      try {
        await sendStatement(st);
        return;
      } catch (e) {
        if (!statusDetail(e, MembershipConflictSchema)) throw e;
        last = e;
      }
    }
    throw new Error(`umbra: the membership of ${this.id} kept changing while this change was signed: ${errMsg(last)}`, { cause: last });
  }

  /** @internal Creates the group with the user as its owner. */
  async create(opts: CreateGroupOptions, signal?: AbortSignal): Promise<GroupInfo> {
    const me = await this.client.identity(signal);
    const members = [...(opts.members ?? [])];
    const others = members.filter((id) => id !== me);
    let info: GroupInfo | undefined;
    await this.#change(
      { kind: MembershipKind.CREATE, subjects: others },
      undefined,
      async (statement) => {
        const resp = await this.client.transport.unary(
          GroupService.method.createGroup,
          {
            groupId: this.id,
            members,
            encryptionMode: opts.encryptionMode ?? EncryptionMode.REQUIRED,
            historyVisibility: opts.historyVisibility ?? HistoryVisibility.SINCE_JOIN,
            ...(opts.rotationPolicy ? { rotationPolicy: opts.rotationPolicy } : {}),
            statement,
          },
          { signal },
        );
        info = resp.group;
      },
      signal,
    );
    this.observe(info);
    return info!;
  }

  /** Adds identities as members; returns those that became members. The next message commits an epoch that includes them. */
  async add(identities: readonly string[], signal?: AbortSignal): Promise<string[]> {
    let added: string[] = [];
    await this.#change(
      { kind: MembershipKind.ADD },
      (m, ch) => {
        ch.subjects = [...new Set(identities.filter((id) => m.role(id) === MembershipRole.UNSPECIFIED))];
        return ch.subjects.length === 0;
      },
      async (statement) => {
        const st = parseMembershipStatement(statement);
        const resp = await this.client.transport.unary(GroupService.method.addMembers, { groupId: this.id, identities: [...st.subjects], statement }, { signal });
        this.observe(resp.group);
        added = resp.added;
      },
      signal,
    );
    return added;
  }

  /** Removes (kicks) a member. The next message commits an epoch whose key it does not get. */
  async remove(identity: string, signal?: AbortSignal): Promise<void> {
    await this.#change({ kind: MembershipKind.REMOVE, subjects: [identity] }, undefined, async (statement) => {
      const resp = await this.client.transport.unary(GroupService.method.removeMember, { groupId: this.id, identity, statement }, { signal });
      this.observe(resp.group);
    }, signal);
  }

  /** Bans identity, removing it if it is a member; reports whether it was one. */
  async ban(identity: string, signal?: AbortSignal): Promise<boolean> {
    let removed = false;
    await this.#change(
      { kind: MembershipKind.BAN, subjects: [identity] },
      (m) => m.banned(identity),
      async (statement) => {
        const resp = await this.client.transport.unary(GroupService.method.banMember, { groupId: this.id, identity, statement }, { signal });
        this.observe(resp.group);
        removed = resp.removed;
      },
      signal,
    );
    return removed;
  }

  /** Lifts a ban; it does not make the identity a member again. */
  async unban(identity: string, signal?: AbortSignal): Promise<void> {
    await this.#change({ kind: MembershipKind.UNBAN, subjects: [identity] }, undefined, async (statement) => {
      await this.client.transport.unary(GroupService.method.unbanMember, { groupId: this.id, identity, statement }, { signal });
    }, signal);
  }

  /**
   * Leaves the group. An owner who leaves hands it to the longest-serving admin or
   * member (among the members of the verified chain); the reply names the new owner, or
   * says the group was deleted because the user was its last member.
   */
  async leave(signal?: AbortSignal): Promise<LeaveGroupResponse> {
    const me = await this.client.identity(signal);
    let resp: LeaveGroupResponse | undefined;
    await this.#change(
      { kind: MembershipKind.LEAVE },
      async (m, ch) => {
        ch.subjects = [];
        if (m.role(me) !== MembershipRole.OWNER || m.memberCount() < 2) return false;
        ch.subjects = [await this.#successor(m, me, signal)];
        return false;
      },
      async (statement) => {
        resp = await this.client.transport.unary(GroupService.method.leaveGroup, { groupId: this.id, statement }, { signal });
      },
      signal,
    );
    this.client.groups.forget(this.id);
    return resp!;
  }

  async #successor(m: Membership, me: string, signal?: AbortSignal): Promise<string> {
    const info = await this.info(signal);
    let first = "";
    let admin = "";
    for (const member of info.members) {
      const id = member.identity;
      const role = m.role(id);
      if (id === me || role === MembershipRole.UNSPECIFIED) continue;
      if (role === MembershipRole.ADMIN && admin === "") admin = id;
      else if (first === "") first = id;
    }
    if (admin !== "") return admin;
    if (first !== "") return first;
    throw chainError(`the service lists none of the members of ${this.id}'s verified chain`);
  }

  /** Makes a member an admin or a plain member. Owner only. */
  async setRole(identity: string, role: GroupRole, signal?: AbortSignal): Promise<void> {
    await this.#change(
      { kind: MembershipKind.SET_ROLE, subjects: [identity], role: role as number as MembershipRole },
      (m) => m.role(identity) === (role as number as MembershipRole),
      async (statement) => {
        await this.client.transport.unary(GroupService.method.setRole, { groupId: this.id, identity, role, statement }, { signal });
      },
      signal,
    );
  }

  /** Makes another member the owner; the user becomes an admin. */
  async transferOwnership(newOwner: string, signal?: AbortSignal): Promise<void> {
    await this.#change({ kind: MembershipKind.TRANSFER_OWNERSHIP, subjects: [newOwner] }, undefined, async (statement) => {
      const resp = await this.client.transport.unary(GroupService.method.transferOwnership, { groupId: this.id, newOwner, statement }, { signal });
      this.observe(resp.group);
    }, signal);
  }

  /** Accepts identity's pending join request. */
  async approveJoin(identity: string, signal?: AbortSignal): Promise<void> {
    await this.#change({ kind: MembershipKind.APPROVE_JOIN, subjects: [identity] }, undefined, async (statement) => {
      await this.client.transport.unary(GroupService.method.approveJoinRequest, { groupId: this.id, identity, statement }, { signal });
    }, signal);
    this.#state.rotationRequired = true;
  }

  /** Refuses identity's pending join request. */
  async declineJoin(identity: string, signal?: AbortSignal): Promise<void> {
    await this.client.transport.unary(GroupService.method.declineJoinRequest, { groupId: this.id, identity }, { signal });
  }

  /** The pending join requests, oldest first. */
  async joinRequests(signal?: AbortSignal): Promise<JoinRequest[]> {
    return allPages(async (pageToken) => {
      const r = await this.client.transport.unary(GroupService.method.listJoinRequests, { groupId: this.id, pageToken }, { signal });
      return [r.joinRequests, r.nextPageToken];
    });
  }

  /** Invites identity; it joins when it accepts. ttlMs defaults to the service's 7 days. */
  async invite(identity: string, ttlMs = defaultInvitationTtlMs, signal?: AbortSignal): Promise<Invitation> {
    if (ttlMs <= 0) ttlMs = defaultInvitationTtlMs;
    let inv: Invitation | undefined;
    await this.#change(
      { kind: MembershipKind.INVITE, subjects: [identity] },
      (_m, ch) => {
        ch.expiresAtUnixSeconds = BigInt(Math.floor((this.client.cfg.now().getTime() + ttlMs) / 1000));
        return false;
      },
      async (statement) => {
        const ttl = { seconds: BigInt(Math.floor(ttlMs / 1000)), nanos: (ttlMs % 1000) * 1e6 };
        const resp = await this.client.transport.unary(GroupService.method.inviteMember, { groupId: this.id, identity, ttl, statement }, { signal });
        inv = resp.invitation;
      },
      signal,
    );
    return inv!;
  }

  /** @internal Accepts the user's invitation, as the verified chain holds it. */
  async acceptInvitation(signal?: AbortSignal): Promise<void> {
    const me = await this.client.identity(signal);
    await this.#change(
      { kind: MembershipKind.ACCEPT_INVITATION },
      (m, ch) => {
        const inv = m.invitation(me);
        if (!inv) throw e2eeError(E2eeErrorKind.NotMember, `the verified membership chain of ${this.id} holds no pending invitation of ${me}`);
        ch.invitationHash = inv.hash;
        return false;
      },
      async (statement) => {
        await this.client.transport.unary(GroupService.method.acceptInvitation, { groupId: this.id, statement }, { signal });
      },
      signal,
    );
    this.#state.rotationRequired = true;
  }

  /** Sets whether messages must, may or may not be encrypted. Owner only. */
  async setEncryptionMode(encryptionMode: EncryptionMode, signal?: AbortSignal): Promise<void> {
    const resp = await this.client.transport.unary(GroupService.method.setEncryptionMode, { groupId: this.id, encryptionMode }, { signal });
    this.observe(resp.group);
  }

  /** Sets when the key must rotate besides membership and card changes. Owner only. */
  async setRotationPolicy(rotationPolicy: MessageInitShape<typeof RotationPolicySchema>, signal?: AbortSignal): Promise<void> {
    const resp = await this.client.transport.unary(GroupService.method.setRotationPolicy, { groupId: this.id, rotationPolicy }, { signal });
    this.observe(resp.group);
  }

  /** Sets which epoch keys, and so which history, members can read. Owner only. */
  async setHistoryVisibility(historyVisibility: HistoryVisibility, signal?: AbortSignal): Promise<void> {
    const resp = await this.client.transport.unary(GroupService.method.setHistoryVisibility, { groupId: this.id, historyVisibility }, { signal });
    this.observe(resp.group);
  }

  // ---- epochs ----

  /** Commits a new epoch now. A lost race to another member's commit loads the winner's key instead. */
  async rotate(signal?: AbortSignal): Promise<void> {
    const st = await this.client.transport.unary(GroupService.method.getEpochState, { groupId: this.id }, { signal });
    if (st.encryptionMode === EncryptionMode.OFF) throw umbraError(UmbraErrorKind.EncryptionOff, this.id);
    await this.#commitFrom(st, signal);
  }

  /** The current epoch and its key, committing a new epoch first if there is none or the service requires one. */
  async #currentKey(signal?: AbortSignal): Promise<[bigint, Uint8Array]> {
    const s = this.#state;
    let key = s.keys.get(s.current);
    if (s.current > 0n && key && !s.rotationRequired) return [s.current, key];
    const st = await this.client.transport.unary(GroupService.method.getEpochState, { groupId: this.id }, { signal });
    s.mode = st.encryptionMode;
    s.current = st.epoch;
    s.rotationRequired = st.rotationRequired;
    if (st.encryptionMode === EncryptionMode.OFF) throw umbraError(UmbraErrorKind.EncryptionOff, this.id);
    if (st.epoch === 0n || st.rotationRequired) await this.#commitFrom(st, signal);
    const epoch = s.current;
    key = s.keys.get(epoch) ?? (await this.#epochKey(epoch, signal));
    return [epoch, key];
  }

  /**
   * Commits the epoch after st's for the members of the verified chain at the head st
   * names (never the service's member list): their trusted active cards get the key, and
   * the commit names that head. On CommitMismatch it verifies what it missed and tries
   * again; if another member's commit wins, it loads that one's key.
   */
  async #commitFrom(st: GetEpochStateResponse, signal?: AbortSignal): Promise<void> {
    const { ks, kp, cardId: myCard } = this.client.current();
    const me = ks.identity;
    const from = st.epoch;
    const previous = await this.#previousCommitHash(st, signal);
    const s = this.#state;
    let headSeq = st.membershipSequence;
    let headHash: Uint8Array | undefined = st.membershipHash.length > 0 ? st.membershipHash : undefined;
    let last: unknown;
    for (let attempt = 0; attempt < rotationAttempts; attempt++) {
      const m = await this.#withChain(headSeq, headHash, false, (m) => m.clone(), signal);
      if (m.role(me) === MembershipRole.UNSPECIFIED) {
        throw e2eeError(E2eeErrorKind.NotMember, `${me} is not a member of ${this.id} in its verified membership chain`);
      }
      const identities = m.members();
      const head: MembershipHead = { sequence: m.sequence, hash: m.head! };
      const found = await this.client.trustedCards(identities, signal);
      const mine = found.get(me);
      if (!mine || !equalBytes(mine.id, myCard)) throw notActiveHere(me);
      // Members without an active card get no key; the service does not count them.
      const cards: Card[] = [];
      const owners: string[] = [];
      for (const id of identities) {
        const card = found.get(id);
        if (card) {
          cards.push(card);
          owners.push(id);
        }
      }
      const ep = await newEpoch(kp, myCard, this.id, from + 1n, previous, head, cards, this.client.cfg.now());
      const keys: MessageInitShape<typeof MemberKeySchema>[] = ep.wrappedKeys.map((w, i) => ({ identity: owners[i]!, wrappedKey: w }));
      let err: unknown;
      try {
        await this.#commit(from, ep.commit, keys, signal);
      } catch (e) {
        err = e;
      }
      const conflict = statusDetail(err, EpochConflictSchema);
      // Committed, or our own commit won before its answer was lost.
      if (err === undefined || (conflict && equalBytes(conflict.currentCommitHash, ep.commitHash))) {
        s.keys.set(ep.number, ep.key);
        s.commitHashes.set(ep.number, ep.commitHash);
        s.heads.set(ep.number, head);
        if (ep.number > 1n && previous) s.vouched.set(ep.number - 1n, previous);
        if (ep.number >= s.current) {
          s.current = ep.number;
          s.rotationRequired = false;
        }
        return;
      }
      if (conflict) {
        if (conflict.currentEpoch >= s.current) {
          s.current = conflict.currentEpoch;
          s.rotationRequired = false;
        }
        if (conflict.currentEpoch > 0n) await this.#epochKey(conflict.currentEpoch, signal);
        return;
      }
      const mismatch = statusDetail(err, CommitMismatchSchema);
      if (!mismatch) throw err;
      last = err; // the members or their cards changed under us: refetch them
      headSeq = mismatch.membershipSequence;
      headHash = mismatch.membershipHash.length > 0 ? mismatch.membershipHash : undefined;
    }
    throw umbraError(UmbraErrorKind.RotationFailed, errMsg(last), last);
  }

  async #commit(from: bigint, commit: SignedCommit, keys: MessageInitShape<typeof MemberKeySchema>[], signal?: AbortSignal): Promise<void> {
    let uploadId = "";
    while (keys.length > commitChunk) {
      const resp = await this.client.transport.unary(GroupService.method.stageEpochKeys, { groupId: this.id, fromEpoch: from, uploadId, keys: keys.slice(0, commitChunk) }, { signal });
      uploadId = resp.uploadId;
      keys = keys.slice(commitChunk);
    }
    await this.client.transport.unary(GroupService.method.commitEpoch, { groupId: this.id, fromEpoch: from, commit, keys, uploadId }, { signal });
  }

  /** The key of epoch, fetched and verified (with the epochs after it in the same page) if not held. */
  async #epochKey(epoch: bigint, signal?: AbortSignal): Promise<Uint8Array> {
    if (epoch === 0n) throw e2eeError(E2eeErrorKind.WrongEpoch, `epoch 0 of ${this.id} has no key (no epoch was committed yet)`);
    const s = this.#state;
    const held = s.keys.get(epoch);
    if (held) return held;
    let resp;
    try {
      resp = await this.client.transport.unary(GroupService.method.getEpochKeys, { groupId: this.id, afterEpoch: epoch - 1n }, { signal });
    } catch (e) {
      if (hasCode(e, Code.PERMISSION_DENIED)) throw e2eeError(E2eeErrorKind.NotMember, e.rawMessage, e);
      throw e;
    }
    // Newest first: a verified commit vouches for the one it names as its predecessor,
    // whose signer may have left since.
    let firstErr: unknown;
    const signers: SignerCards = new Map();
    for (let i = resp.keys.length - 1; i >= 0; i--) {
      try {
        await this.#acceptEpochKey(resp.keys[i]!, signers, signal);
      } catch (e) {
        if (resp.keys[i]!.epoch === epoch) firstErr = e;
      }
    }
    if (firstErr !== undefined) throw firstErr;
    const key = s.keys.get(epoch);
    if (key) return key;
    throw e2eeError(E2eeErrorKind.WrongEpoch, `the service holds no key of epoch ${epoch} of ${this.id} for this user (not a member then?)`);
  }

  /** The hash of the commit of st's epoch, verified: one held, or the one st carries, checked now. */
  async #previousCommitHash(st: GetEpochStateResponse, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    if (st.epoch === 0n) return undefined;
    const s = this.#state;
    const held = s.commitHashes.get(st.epoch);
    const served = st.commit?.commitHash ?? new Uint8Array(0);
    if (held) {
      if (!equalBytes(held, served)) throw e2eeError(E2eeErrorKind.BadSignature, `the service's commit of epoch ${st.epoch} is not the one this client verified`);
      return held;
    }
    const commit = await this.#verifyCommit(st.epoch, st.commit, undefined, signal);
    if (!equalBytes(commit.hash, served)) throw e2eeError(E2eeErrorKind.Malformed, `the service's hash of the commit of epoch ${st.epoch} is not the commit's`);
    accept(s, commit);
    return commit.hash;
  }

  /**
   * Checks a commit the service returned for epoch: its signature by the card it names
   * (active when the commit was made, trusted), and the membership head it names, which
   * must be in the verified chain with the signer a member at it.
   */
  async #verifyCommit(epoch: bigint, ec: EpochCommitProto | undefined, signers: SignerCards | undefined, signal?: AbortSignal): Promise<EpochCommit> {
    const signed = ec?.commit ?? { content: new Uint8Array(0), signature: new Uint8Array(0) };
    const parsed = parseEpochCommit(signed);
    const signer = await signerCard(this.client, signers, parsed.signerCardId, signal);
    if (ec?.committedBy && ec.committedBy !== signer.identity) {
      throw e2eeError(E2eeErrorKind.WrongSender, `epoch ${epoch} is signed by a card of ${signer.identity}; the service says ${ec.committedBy} committed it`);
    }
    await this.#checkHeadMember(parsed.membership, signer.identity, signal);
    const commit = verifyEpochCommit(signed, this.id, epoch, signer);
    this.client.checkCardLifetime(signer, unixDate(commit.createdAtUnixSeconds));
    return commit;
  }

  /** Verifies an epoch key from the service and keeps it. */
  async #acceptEpochKey(ek: EpochKey, signers: SignerCards, signal?: AbortSignal): Promise<void> {
    const { ks } = this.client.current();
    const commit = await this.#verifyCommit(ek.epoch, ek.commit, signers, signal);
    const key = await openEpochKey(commit, ek.wrappedKey, ks.keyFor);
    const s = this.#state;
    const prev = s.commitHashes.get(commit.epoch - 1n);
    if (prev && !(commit.previousCommitHash && equalBytes(prev, commit.previousCommitHash))) {
      throw e2eeError(E2eeErrorKind.BadSignature, `epoch ${commit.epoch} does not name the commit of epoch ${commit.epoch - 1n} this client holds`);
    }
    const named = s.vouched.get(commit.epoch);
    if (named && !equalBytes(named, commit.hash)) {
      throw e2eeError(E2eeErrorKind.BadSignature, `the commit of epoch ${commit.epoch} is not the one epoch ${commit.epoch + 1n} names`);
    }
    accept(s, commit);
    s.keys.set(commit.epoch, key);
  }

  /** Throws unless head is a statement of the verified chain and identity was a member at it. */
  async #checkHeadMember(head: MembershipHead, identity: string, signal?: AbortSignal): Promise<void> {
    await this.#withChain(head.sequence, undefined, false, (m) => {
      const at = m.hashAt(head.sequence);
      if (!at || !equalBytes(at, head.hash)) {
        throw chainError(
          `membership statement ${head.sequence} (${hexId(head.hash)}) is not in the chain this client verified (head ${m.sequence})`,
          e2eeError(E2eeErrorKind.BrokenChain, "a commit names a membership head outside the verified chain"),
        );
      }
      if (!m.memberAt(identity, head.sequence)) {
        throw e2eeError(E2eeErrorKind.NotMember, `${identity} was not a member of ${this.id} at membership statement ${head.sequence}`);
      }
    }, signal);
  }

  /**
   * Gives recipient, a member who joined later, the keys of the epochs before it joined,
   * re-wrapped to its trusted active card (history visibility SHARED). Returns how many.
   */
  async shareHistory(recipient: string, signal?: AbortSignal): Promise<number> {
    const info = await this.info(signal);
    const member = info.members.find((m) => m.identity === recipient);
    if (!member?.joinedAt) throw e2eeError(E2eeErrorKind.NotMember, `${recipient} is not a member of ${this.id}`);
    const joined = timestampDate(member.joinedAt).getTime();
    const card = (await this.client.trustedCards([recipient], signal)).get(recipient);
    if (!card) throw umbraError(UmbraErrorKind.NoCard, recipient);
    const shares: MessageInitShape<typeof EpochShareSchema>[] = [];
    const signers: SignerCards = new Map();
    const s = this.#state;
    let pageToken = "";
    for (;;) {
      const resp = await this.client.transport.unary(GroupService.method.getEpochKeys, { groupId: this.id, pageToken }, { signal });
      for (let i = resp.keys.length - 1; i >= 0; i--) {
        const ek = resp.keys[i]!;
        const at = ek.commit?.committedAt;
        if (!at || timestampDate(at).getTime() >= joined) continue;
        let key = s.keys.get(ek.epoch);
        if (!key) {
          await this.#acceptEpochKey(ek, signers, signal);
          key = s.keys.get(ek.epoch)!;
        }
        shares.push({ epoch: ek.epoch, recipient, wrappedKey: await wrapEpochKey(this.id, ek.epoch, key, card) });
      }
      pageToken = resp.nextPageToken;
      if (pageToken === "") break;
    }
    for (let i = 0; i < shares.length; i += commitChunk) {
      await this.client.transport.unary(GroupService.method.shareEpochKeys, { groupId: this.id, shares: shares.slice(i, i + commitChunk) }, { signal });
    }
    return shares.length;
  }

  // ---- group messages ----

  /**
   * Encrypts and signs data at the current epoch, committing a new one first when the
   * group has none or needs one. Returns the epoch and the GroupMessage bytes.
   */
  async encrypt(data: Uint8Array, signal?: AbortSignal): Promise<{ epoch: bigint; message: Uint8Array }> {
    const { kp, cardId } = this.client.current();
    const [epoch, key] = await this.#currentKey(signal);
    return { epoch, message: sealGroupMessage(kp, cardId, this.id, epoch, key, data, { now: this.client.cfg.now() }) };
  }

  /**
   * Opens a GroupMessage sender (an identity) is expected to have sent: the sender card
   * must be one of sender's, active when the message was written, and sender a member at
   * the membership head of the epoch's verified commit.
   */
  async decrypt(data: Uint8Array, sender: string, signal?: AbortSignal): Promise<Uint8Array> {
    this.client.current();
    return this.open(data, inspectGroupMessage(data), sender, signal);
  }

  /** @internal decrypt of data whose header reads as info. */
  async open(data: Uint8Array, info: GroupMessageInfo, sender: string, signal?: AbortSignal): Promise<Uint8Array> {
    if (info.groupId !== this.id) throw e2eeError(E2eeErrorKind.WrongGroup, `the message is of ${info.groupId}, not ${this.id}`);
    const card = await this.client.senderCard(info.senderCardId, sender, unixDate(info.createdAtUnixSeconds), signal);
    const key = await this.#epochKey(info.epoch, signal);
    const head = this.#state.heads.get(info.epoch);
    if (!head) throw e2eeError(E2eeErrorKind.WrongEpoch, `no verified commit of epoch ${info.epoch} of ${this.id}`);
    await this.#checkHeadMember(head, sender, signal);
    return openGroupMessage(data, this.id, (e) => (e === info.epoch ? key : undefined), card);
  }

  /**
   * Encrypts data and sends it in the group's conversation. When the service refuses the
   * epoch (a member joined or left, a card rotated, the policy is due), it commits a new
   * epoch or loads the one another member committed, re-encrypts and resends with the
   * same client message id, so the message is stored once.
   */
  async send(data: Uint8Array, signal?: AbortSignal): Promise<SendResponse> {
    const { cardId } = this.client.current();
    const clientMessageId = newClientMessageId();
    let last: unknown;
    for (let attempt = 0; attempt < sendAttempts; attempt++) {
      const { epoch, message } = await this.encrypt(data, signal);
      try {
        return await send(
          this.client,
          { conversationId: this.id, clientMessageId, header: { kind: MessageKind.ENCRYPTED, epoch, senderCardId: cardId }, envelope: message },
          signal,
        );
      } catch (e) {
        const required = hasCode(e, Code.FAILED_PRECONDITION) ? statusDetail(e, EpochRequiredSchema) : undefined;
        if (!required) throw e;
        last = e;
        const s = this.#state;
        if (required.currentEpoch >= s.current) {
          s.current = required.currentEpoch;
          s.rotationRequired = required.rotationRequired;
        }
      }
    }
    throw umbraError(UmbraErrorKind.RotationFailed, `the service kept refusing the epoch: ${errMsg(last)}`, last);
  }

  /** Sends data unencrypted, which the service accepts only in groups whose mode is OPTIONAL or OFF. */
  async sendPlaintext(data: Uint8Array, signal?: AbortSignal): Promise<SendResponse> {
    return send(this.client, { conversationId: this.id, clientMessageId: newClientMessageId(), header: { kind: MessageKind.PLAINTEXT }, envelope: data }, signal);
  }
}

/** Opens an ENCRYPTED message of a group conversation, checking its readable header against the signed one. */
export async function openGroupConversationMessage(c: UmbraClient, m: Message, signal?: AbortSignal): Promise<Uint8Array> {
  const info = inspectGroupMessage(m.envelope);
  if (info.epoch !== (m.header?.epoch ?? 0n) || !equalBytes(info.senderCardId, m.header?.senderCardId ?? new Uint8Array(0))) {
    throw e2eeError(
      E2eeErrorKind.Malformed,
      `the message's readable header (epoch ${m.header?.epoch}) differs from its signed one (epoch ${info.epoch}) or names another card`,
    );
  }
  c.current();
  return new Group(c, m.conversationId).open(m.envelope, info, m.sender, signal);
}

/**
 * Updates what the client knows of a group from one of its events: a required rotation
 * makes the next message commit a new epoch without waiting to be refused; a new epoch
 * makes it fetch that key. (Who is a member comes from the verified chain only.)
 */
export function observeGroupEvent(c: UmbraClient, item: SubscribeResponse): void {
  const ev = groupEvent(item);
  if (!ev) return;
  if (ev.kind === GroupEventKind.DELETED) {
    c.groups.forget(ev.groupId);
    return;
  }
  const s = c.groups.get(ev.groupId);
  if (ev.kind === GroupEventKind.ROTATION_REQUIRED && ev.epoch >= s.current) {
    s.current = ev.epoch;
    s.rotationRequired = true;
  } else if (ev.kind === GroupEventKind.EPOCH_COMMITTED && ev.epoch > s.current) {
    s.current = ev.epoch;
    s.rotationRequired = false;
  }
  if (ev.group) s.mode = ev.group.encryptionMode;
}

/** Calls page with each page token in turn until a page names no next one. */
export async function allPages<T>(page: (token: string) => Promise<[T[], string]>): Promise<T[]> {
  const out: T[] = [];
  let token = "";
  for (;;) {
    const [items, next] = await page(token);
    out.push(...items);
    if (next === "") return out;
    token = next;
  }
}

