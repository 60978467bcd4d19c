-- Mailgate's ledger on Postgres: what resonate-pg cannot answer (it has no promise search).
-- Applied once, in order with the files after it, by `mailgate db migrate` or any role at
-- start; each applied file is recorded in mailgate.migrations. resonate-pg's own schema
-- (`resonate`) is never changed by Mailgate; the retention job deletes from it.

CREATE TABLE mailgate.events (
  request_id TEXT   NOT NULL,
  seq        INT    NOT NULL,
  value      TEXT   NOT NULL,  -- the event as JSON text, byte for byte as the ledger wrote it
  PRIMARY KEY (request_id, seq)
);

-- One row per request: its newest event (the "head"), written in the transaction that writes
-- that event, with the columns listings filter on.
CREATE TABLE mailgate.requests (
  request_id TEXT    PRIMARY KEY,
  head_seq   INT     NOT NULL,
  head       TEXT    NOT NULL,
  state      TEXT    NOT NULL,
  open       BOOLEAN NOT NULL,
  approver   TEXT    NOT NULL,
  pair       TEXT    NOT NULL
);
CREATE INDEX requests_state ON mailgate.requests (state, request_id);
CREATE INDEX requests_open ON mailgate.requests (open, request_id);
CREATE INDEX requests_approver ON mailgate.requests (approver, open, state, request_id);
CREATE INDEX requests_pair ON mailgate.requests (pair);

-- The newest progress note of a request ("Ollama unreachable, retrying").
CREATE TABLE mailgate.notes (
  request_id TEXT   PRIMARY KEY,
  detail     TEXT   NOT NULL,
  at         BIGINT NOT NULL
);

-- Once-only markers: the first insert wins, and its nonce says who that was (a claim tried
-- again after a lost answer still knows it won).
CREATE TABLE mailgate.claims (
  request_id TEXT   NOT NULL,
  name       TEXT   NOT NULL,
  at         BIGINT NOT NULL,
  nonce      TEXT   NOT NULL,
  PRIMARY KEY (request_id, name)
);
