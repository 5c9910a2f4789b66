-- The card service's tables in PostgreSQL (docs/storage-postgres.md, "The card
-- service"). Each row holds the record the bbolt engine stores, as its protobuf bytes
-- (umbra.storage.card.v1), beside the columns the engine looks it up by. Ids compare
-- as bytes (COLLATE "C"), so that lists come in the bbolt engine's order. The tables of
-- one app's cards start their primary key with app_id, the distribution column
-- (docs/scaling.md); the feed and the key transparency log are one sequence for every
-- app, as in card.db.

-- +goose Up
CREATE TABLE cards (
  app_id text COLLATE "C" NOT NULL,
  card_id bytea NOT NULL,
  identity text COLLATE "C" NOT NULL,
  -- The sequence of the event that published the card: the identity's history is
  -- its cards in this order.
  sequence bigint NOT NULL CHECK (sequence > 0),
  record bytea NOT NULL, -- CardRecord
  PRIMARY KEY (app_id, card_id)
);
CREATE UNIQUE INDEX cards_history ON cards (app_id, identity, sequence);

-- Each identity's ACTIVE card, a copy of what searches read: at most one per
-- identity, by the primary key.
CREATE TABLE active_cards (
  app_id text COLLATE "C" NOT NULL,
  identity text COLLATE "C" NOT NULL,
  card_id bytea NOT NULL,
  record bytea NOT NULL, -- ActiveCardRecord
  PRIMARY KEY (app_id, identity),
  FOREIGN KEY (app_id, card_id) REFERENCES cards (app_id, card_id)
);

-- The card event feed, which the key transparency log and the group service follow.
CREATE TABLE card_events (
  sequence bigint PRIMARY KEY CHECK (sequence > 0),
  record bytea NOT NULL -- CardEventRecord
);

-- The last sequence given to an event: one row, read FOR UPDATE and updated in the
-- transaction of every publication, revocation and service key rotation. Its row lock
-- makes them take turns, as bbolt's one writer does: events get their sequences in
-- commit order without gaps (a rolled-back change gives its numbers back), a follower
-- of the feed never sees an event before an earlier one has committed, and the rotation
-- rule and the reset grants see every earlier change. latest_published_ns is the
-- latest published_at of any card (Unix nanoseconds): a service key rotation may not
-- be dated before it.
CREATE TABLE card_event_sequence (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  last bigint NOT NULL CHECK (last >= 0),
  latest_published_ns bigint NOT NULL
);
INSERT INTO card_event_sequence (one, last, latest_published_ns) VALUES (true, 0, -9223372036854775808);

-- Reset grants spent, each accepted once, kept until forget_after_ns (the grant's
-- expiry and a margin, Unix nanoseconds).
CREATE TABLE reset_grants (
  app_id text COLLATE "C" NOT NULL,
  grant_id text COLLATE "C" NOT NULL,
  forget_after_ns bigint NOT NULL,
  record bytea NOT NULL, -- SpentResetGrantRecord
  PRIMARY KEY (app_id, grant_id)
);
CREATE INDEX reset_grants_expiry ON reset_grants (forget_after_ns);

-- The counter-signing keys: the current one (with its seed) and the retired ones.
-- Exactly one is current once the first is made, by the partial unique index.
CREATE TABLE service_keys (
  key_id text COLLATE "C" PRIMARY KEY,
  current boolean NOT NULL,
  record bytea NOT NULL -- ServiceKeyRecord
);
CREATE UNIQUE INDEX service_keys_one_current ON service_keys (current) WHERE current;

-- Key transparency (docs/key-transparency.md, "Storage"): keys and values as in
-- card.db's buckets of the same names.
CREATE TABLE kt_log_key (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  record bytea NOT NULL -- LogKeyRecord
);

-- The log's size (that of its latest checkpoint): one row, which the log's single
-- appender holds FOR UPDATE while it appends, so that two replicas' followers take
-- turns and never append an event twice or fork the trees.
CREATE TABLE kt_log_state (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  size bigint NOT NULL CHECK (size >= 0)
);
INSERT INTO kt_log_state (one, size) VALUES (true, 0);

CREATE TABLE kt_leaves (
  log_index bigint PRIMARY KEY CHECK (log_index >= 0),
  leaf bytea NOT NULL -- LogLeaf bytes (umbra.kt.v1)
);

CREATE TABLE kt_log_tiles (
  tile_key bytea PRIMARY KEY, -- u8(tile level) u64(tile index)
  tile bytea NOT NULL
);

CREATE TABLE kt_map_tiles (
  tile_key bytea PRIMARY KEY, -- u16(depth) and the depth's bits of the path
  tile bytea NOT NULL
);

CREATE TABLE kt_map_values (
  map_key bytea PRIMARY KEY, -- 32 bytes
  value bytea NOT NULL -- MapValue bytes (umbra.kt.v1)
);

CREATE TABLE kt_checkpoints (
  size bigint PRIMARY KEY CHECK (size >= 0),
  record bytea NOT NULL -- CheckpointRecord
);
