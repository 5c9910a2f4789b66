-- The backup service's tables in PostgreSQL (docs/storage-postgres.md). Each row holds
-- the record the bbolt engine stores, as its protobuf bytes (umbra.storage.backup.v1),
-- beside the columns the engine finds it by. Ids compare as bytes (COLLATE "C").

-- +goose Up
-- One row per written slot: its version counter, attempt budget and backup. An update
-- reads its row FOR UPDATE, so updates of one slot take turns on every replica: a
-- guess is counted once, the last attempt is spent once, a CAS on the version sees
-- the version the previous update wrote.
CREATE TABLE slots (
  app_id text COLLATE "C" NOT NULL,
  identity text COLLATE "C" NOT NULL,
  slot integer NOT NULL CHECK (slot BETWEEN 0 AND 255),
  record bytea NOT NULL, -- BackupSlotRecord
  PRIMARY KEY (app_id, identity, slot)
);

-- Events for the messaging service, written in the transaction of the erasure they
-- report, deleted once delivered.
CREATE SEQUENCE outbox_sequence AS bigint MINVALUE 1;
CREATE TABLE outbox (
  sequence bigint PRIMARY KEY CHECK (sequence > 0),
  record bytea NOT NULL -- BackupOutboxRecord
);

-- Who delivers the outbox: one replica at a time (the holder), until `until` unless it
-- renews, so events go out once and oldest first as with one process. The holder lets
-- go when it finds the outbox empty, or when it stops.
CREATE TABLE outbox_delivery (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  holder text,
  until timestamptz
);
INSERT INTO outbox_delivery (one) VALUES (true);

-- The server secret's check value (never the secret), under the name secret_check:
-- written once, by the first replica that starts.
CREATE TABLE server_state (
  name text COLLATE "C" PRIMARY KEY,
  value bytea NOT NULL
);
