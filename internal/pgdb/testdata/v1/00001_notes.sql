-- +goose Up
CREATE TABLE notes (
  id text COLLATE "C" PRIMARY KEY,
  body bytea NOT NULL
);
