-- The engine's state as rows (service/engine/rows.py): a request reads the promises and tasks
-- it touches and writes back the ones it changed, so nothing is loaded at start and memory does
-- not grow with the backlog. The 0001 journal and snapshot of an older data dir are converted
-- into these rows at its first start (service/engine/legacy.py) and left empty.

-- One row per promise; seq is creation order (the order the SDK's dict-based state keeps).
-- A lineage (a root and every "<root>:..." id) is an id range: retention needs no other index.
CREATE TABLE promises (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    state      TEXT    NOT NULL,
    timer_at   INTEGER,           -- when the tick times this pending promise out, if it does
    settled_at INTEGER,
    data       BLOB    NOT NULL   -- the SDK's DurablePromise, msgpack
);
CREATE INDEX promises_pending ON promises(id) WHERE state = 'pending';
CREATE INDEX promises_by_timer ON promises(timer_at) WHERE timer_at IS NOT NULL;
CREATE INDEX promises_settled_roots ON promises(settled_at) WHERE instr(id, ':') = 0;

-- Every tag of every promise, written once: tags never change after creation.
CREATE TABLE promise_tags (
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    id    TEXT NOT NULL,
    PRIMARY KEY (key, value, id)
) WITHOUT ROWID;

-- The inverse of DurablePromise.awaiters: which promises a task awaits.
CREATE TABLE awaiters (
    task_id    TEXT NOT NULL,
    promise_id TEXT NOT NULL,
    PRIMARY KEY (task_id, promise_id)
) WITHOUT ROWID;

-- sleeps: a pending task of a durable sleep (ctx.sleep), which needs no timer of its own (its
-- promise's timeout ends it); tasks_live is what a start re-arms timers for.
CREATE TABLE tasks (
    id     TEXT    PRIMARY KEY,
    state  TEXT    NOT NULL,
    sleeps INTEGER NOT NULL,
    data   BLOB    NOT NULL  -- the SDK's Task, msgpack
) WITHOUT ROWID;
CREATE INDEX tasks_live ON tasks(id)
    WHERE state = 'acquired' OR (state = 'pending' AND sleeps = 0);

CREATE TABLE schedules (
    id   TEXT PRIMARY KEY,
    data BLOB NOT NULL  -- the SDK's ScheduleStub, msgpack
) WITHOUT ROWID;
