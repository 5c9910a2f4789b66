-- +goose Up
ALTER TABLE notes ADD COLUMN tag text;
CREATE TABLE tags (
  tag text COLLATE "C" PRIMARY KEY
);
