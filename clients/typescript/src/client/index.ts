// The client layer of @umbra-e2ee/sdk: UmbraClient (cards, trust, key transparency,
// envelopes, messaging, groups, key backup) over the REST gateway, its storages and its errors.
export {
  UmbraClient,
  DefaultClockSkewMs,
  pinServiceKeys,
  type ClientConfig,
  type ContactTrust,
  type Endorsement,
  type KeyChangePolicy,
  type PendingKeyChange,
  type PinnedCard,
  type VerifiedCard,
} from "./client.js";
export { Group, type CreateGroupOptions } from "./groups.js";
export {
  newClientMessageId,
  groupEvent,
  backupEvent,
  GroupEventType,
  BackupEventType,
  type SubscribeOptions,
} from "./messaging.js";
export type { Secret, BackupInfo } from "./backup.js";
export {
  UmbraError,
  UmbraErrorKind,
  KeyChangedError,
  WrongPasswordError,
  LogInconsistentError,
  hasKind,
  fingerprint,
  explainReason,
  type BackupSlotName,
} from "./errors.js";
export { PinFileError, parsePinFile, encodePinFile, type KeyChangeReason, type ServiceKeyPin } from "./pins.js";
export { DefaultKeyTransparencyWaitMs, MaxLookupBatch, type ProvedCard } from "./kt.js";
export { WitnessTimeoutMs, parseWitness, type WitnessConfig } from "./witness.js";
export { AlertReason, KeyTransparencyAlertEvent, UnexpectedCardError, type MonitorReport } from "./monitor.js";
export { KtStateError, parseKtState, encodeKtState, type KtState, type OwnEntry, type PinnedLogKey } from "./ktstate.js";
export { MemoryStorage, KEYSTORE, TRUST, KT_STATE, type Storage } from "../storage/storage.js";
export { FileStorage } from "../storage/file.js";
export { IndexedDBStorage, type IndexedDBStorageOptions } from "../storage/indexeddb.js";
export { RestTransport, registry, methodName, type Auth, type CallOptions, type RetryOptions, type TransportOptions } from "../transport/rest.js";
export { RpcError, NetworkError, Code, hasCode, statusDetail, type RawDetail } from "../transport/errors.js";
export { TokenCache, tokenExpiry, type TokenProvider } from "../transport/token.js";
