-- The messaging service's tables in PostgreSQL (docs/storage-postgres.md, "The
-- messaging service"). Each row holds the record the bbolt engine stores, as its
-- protobuf bytes (umbra.storage.messaging.v1), beside the columns the engine finds it
-- by. Ids compare as bytes (COLLATE "C"), so that lists come in the bbolt engine's
-- order; client_message_id and event_id are bytea, as they may hold a zero byte, which
-- text cannot. Times the engine compares are Unix nanoseconds (bigint), as bbolt keeps
-- them, so that both engines expire and order the same to the nanosecond.
--
-- Every hot table's primary key starts with the app id, then the conversation or the
-- identity (docs/scaling.md).

-- +goose Up

-- A conversation and how far its sequence has gone, never deleted (a sequence number
-- is never handed out twice). A batch locks the rows of its conversations (FOR UPDATE,
-- in key order) before it numbers their messages: replicas take turns per
-- conversation, so sequences are gap-free whichever replica writes.
CREATE TABLE conversations (
  app_id text COLLATE "C" NOT NULL,
  conversation_id text COLLATE "C" NOT NULL,
  latest_sequence bigint NOT NULL CHECK (latest_sequence >= 0),
  record bytea NOT NULL, -- ConversationRecord
  PRIMARY KEY (app_id, conversation_id)
);

-- An identity's part in a conversation: what ListConversations lists, and its cursors.
CREATE TABLE participations (
  app_id text COLLATE "C" NOT NULL,
  identity text COLLATE "C" NOT NULL,
  conversation_id text COLLATE "C" NOT NULL,
  record bytea NOT NULL, -- ParticipationRecord
  PRIMARY KEY (app_id, identity, conversation_id)
);

-- An inbox's latest sequence, locked (FOR UPDATE, in key order) by the batch that adds
-- items to the inbox, as conversations are: inbox sequences are gap-free.
CREATE TABLE inbox_heads (
  app_id text COLLATE "C" NOT NULL,
  identity text COLLATE "C" NOT NULL,
  head bigint NOT NULL CHECK (head >= 0),
  PRIMARY KEY (app_id, identity)
);

-- Idempotency: the message a sender stored under a client_message_id. The primary key
-- stores each key once across replicas; a batch that finds its key taken by another
-- replica's commit runs again and answers the stored message. A row whose message
-- expired (expires_at at or before sweep_state.horizon) counts as absent and is
-- replaced by a new message with the same key, as bbolt's sweep deletes the key.
CREATE TABLE idempotency (
  app_id text COLLATE "C" NOT NULL,
  sender text COLLATE "C" NOT NULL,
  client_message_id bytea NOT NULL,
  conversation_id text COLLATE "C" NOT NULL,
  sequence bigint NOT NULL,
  expires_at bigint NOT NULL, -- Unix ns, the message's
  PRIMARY KEY (app_id, sender, client_message_id)
);
CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);

-- Events' ids, stored once per app, as idempotency keys are.
CREATE TABLE event_ids (
  app_id text COLLATE "C" NOT NULL,
  event_id bytea NOT NULL,
  expires_at bigint NOT NULL,
  PRIMARY KEY (app_id, event_id)
);
CREATE INDEX event_ids_by_expiry ON event_ids (expires_at);

-- The messages, events and inbox items: partitioned by expiry time (Unix ns), so that
-- retention drops whole partitions instead of deleting rows. The partitions are made
-- ahead by the store (partitions below), and dropped once the sweep's horizon has
-- passed their upper bound. The partition key ends each primary key, as PostgreSQL
-- requires; the conversation row's lock (messages) and the inbox head's (inbox) keep
-- the key without it unique.
CREATE TABLE messages (
  app_id text COLLATE "C" NOT NULL,
  conversation_id text COLLATE "C" NOT NULL,
  sequence bigint NOT NULL CHECK (sequence > 0),
  expires_at bigint NOT NULL,
  server_time bigint NOT NULL, -- Unix ns: History's "not before" of a group's history
  size integer NOT NULL,       -- the envelope's bytes: pages are bounded in bytes
  record bytea NOT NULL,       -- MessagingLogRecord holding a StoredMessage
  PRIMARY KEY (app_id, conversation_id, sequence, expires_at)
) PARTITION BY RANGE (expires_at);

CREATE TABLE events (
  app_id text COLLATE "C" NOT NULL,
  event_id bytea NOT NULL,
  expires_at bigint NOT NULL,
  size integer NOT NULL,  -- the payload's bytes
  record bytea NOT NULL,  -- MessagingLogRecord holding a StoredEvent
  fanout bytea NOT NULL,  -- MessagingFanoutRecord: the recipients, for a retry's check
  PRIMARY KEY (app_id, event_id, expires_at)
) PARTITION BY RANGE (expires_at);

-- An inbox item points at a message (conversation_id, sequence) or an event (event_id)
-- of the same expiry, in the partition of the same range.
CREATE TABLE inbox (
  app_id text COLLATE "C" NOT NULL,
  identity text COLLATE "C" NOT NULL,
  inbox_sequence bigint NOT NULL CHECK (inbox_sequence > 0),
  expires_at bigint NOT NULL,
  conversation_id text COLLATE "C",
  sequence bigint,
  event_id bytea,
  PRIMARY KEY (app_id, identity, inbox_sequence, expires_at),
  CHECK ((conversation_id IS NOT NULL AND sequence IS NOT NULL AND event_id IS NULL) OR
         (conversation_id IS NULL AND sequence IS NULL AND event_id IS NOT NULL))
) PARTITION BY RANGE (expires_at);

-- The partitions that exist, the same range for the three tables: [lower, upper) of
-- expires_at, named by their lower bound (messages_<name>, events_<name>,
-- inbox_<name>). Changed only under the store's advisory lock, in the transaction that
-- creates or drops the partitions.
CREATE TABLE partitions (
  lower bigint PRIMARY KEY,
  upper bigint NOT NULL CHECK (upper > lower),
  name text NOT NULL UNIQUE
);

-- How far retention has gone: every entry that expires at or before horizon (Unix ns)
-- is gone for readers, whether or not its partition has been dropped yet. Sweep moves
-- it forwards (GREATEST, so two replicas' sweeps never move it back).
CREATE TABLE sweep_state (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  horizon bigint NOT NULL
);
INSERT INTO sweep_state (one, horizon) VALUES (true, 0);

-- An app's messaging settings; an app without a row has the defaults.
CREATE TABLE app_settings (
  app_id text COLLATE "C" PRIMARY KEY,
  record bytea NOT NULL -- MessagingAppSettingsRecord
);
