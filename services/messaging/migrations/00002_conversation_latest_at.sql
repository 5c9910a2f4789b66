-- A conversation's latest message time as a column of its own (Unix ns), beside
-- latest_sequence, so that a batch moves the two columns forward without encoding and
-- rewriting the conversation's record: the record is written when the conversation is
-- made and when its group's member list changes, not with every message
-- (docs/storage-postgres.md, "The messaging service"). A row from before this
-- migration keeps its time in its record (latest_at NULL) until its next message;
-- readers take the columns over the record's copies.

-- +goose Up
ALTER TABLE conversations ADD COLUMN latest_at bigint;
