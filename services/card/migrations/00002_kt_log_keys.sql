-- The key transparency log keys that log key rotations add (docs/operations.md,
-- "Rotating the log key"), as card.db's kt_log_keys bucket: the log's first key stays
-- in kt_log_key. A retired key keeps its row, without its seed.

-- +goose Up
CREATE TABLE kt_log_keys (
  key_id text COLLATE "C" PRIMARY KEY,
  record bytea NOT NULL -- LogKeyRecord
);
