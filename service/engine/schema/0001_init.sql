-- The engine's journal and its latest snapshot. See service/engine/store.py for the design.

-- Applied migrations, one row per file in service/engine/schema/.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
);

-- Small facts about the data dir (e.g. the pids of the processes that ran embedded in it).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

-- Entries applied after the snapshot, in order: op is 'apply' (body: the request JSON as it
-- arrived), 'tick' (body: JSON list of [task id, version] leases released) or 'purge' (body:
-- JSON list of lineage roots removed by retention); at is the engine time in ms.
CREATE TABLE journal (
    seq  INTEGER PRIMARY KEY,
    op   TEXT    NOT NULL,
    at   INTEGER NOT NULL,
    body BLOB    NOT NULL
);

-- The whole durable state as of journal entry seq (msgpack), at most one row.
CREATE TABLE snapshot (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    data BLOB    NOT NULL
);
