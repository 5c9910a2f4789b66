-- The identity service's tables in PostgreSQL (docs/storage-postgres.md). Each row
-- holds the record the bbolt engine stores, as its protobuf bytes
-- (umbra.storage.identity.v1), beside the columns the engine looks it up by. Ids
-- compare as bytes (COLLATE "C"), so that lists come in the bbolt engine's order.

-- +goose Up
CREATE TABLE apps (
  app_id text COLLATE "C" PRIMARY KEY,
  record bytea NOT NULL -- AppRecord
);

CREATE TABLE app_keys (
  key_id text COLLATE "C" PRIMARY KEY,
  app_id text COLLATE "C" NOT NULL REFERENCES apps (app_id),
  record bytea NOT NULL -- AppKeyRecord
);
CREATE INDEX app_keys_by_app ON app_keys (app_id, key_id);

CREATE TABLE signing_keys (
  key_id text COLLATE "C" PRIMARY KEY,
  record bytea NOT NULL -- SigningKeyRecord
);

-- The revocation in force for each identity, and the feed of revocations by sequence.
CREATE TABLE revocations (
  app_id text COLLATE "C" NOT NULL,
  identity text COLLATE "C" NOT NULL,
  sequence bigint NOT NULL UNIQUE CHECK (sequence > 0),
  record bytea NOT NULL, -- RevocationRecord
  PRIMARY KEY (app_id, identity)
);

-- The last sequence given to a revocation: one row, updated in the revocation's own
-- transaction. Its row lock orders the writers, so sequences are given in commit
-- order and without gaps (a rolled-back revocation gives its number back), and a
-- reader of the feed never sees a sequence before an earlier one has committed.
CREATE TABLE revocation_sequence (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  last bigint NOT NULL CHECK (last >= 0)
);
INSERT INTO revocation_sequence (one, last) VALUES (true, 0);
