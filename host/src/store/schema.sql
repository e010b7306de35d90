-- Capstan run store, schema version 1. Times are RFC 3339 UTC text; JSON
-- columns hold JSON text. New versions are new migrations in sqlite.rs,
-- never edits of this file.

CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    pipeline        TEXT NOT NULL,
    pipeline_file   TEXT NOT NULL,
    pipeline_digest TEXT NOT NULL,
    environment     TEXT NOT NULL,
    author          TEXT NOT NULL,
    kind            TEXT NOT NULL,          -- deploy | rollback
    target          TEXT,                   -- rollback: the run whose outputs it reuses
    undoes          TEXT,                   -- rollback: the run it undoes
    only_stages     TEXT NOT NULL,          -- JSON array
    run_dir         TEXT NOT NULL,
    status          TEXT NOT NULL,
    started         TEXT NOT NULL,
    ended           TEXT,
    -- Did the verification stages (those no other stage needs, e.g. smoke
    -- tests) run, and pass? NULL: they did not run.
    verified        INTEGER,
    plugins         TEXT NOT NULL,          -- JSON
    owner_pid       INTEGER NOT NULL,
    owner_start     INTEGER NOT NULL,
    owner_host      TEXT NOT NULL
) STRICT;
CREATE INDEX runs_by_environment ON runs (environment, id);
CREATE INDEX runs_by_status ON runs (status);

-- One row per attempt: a resumed stage adds a row, earlier ones stay.
CREATE TABLE stages (
    run_id      TEXT NOT NULL REFERENCES runs (id),
    name        TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    plugin      TEXT NOT NULL,
    status      TEXT NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    outputs     TEXT NOT NULL DEFAULT '{}',
    artifacts   TEXT NOT NULL DEFAULT '[]',
    report      TEXT,
    started     TEXT,
    ended       TEXT,
    duration_ms INTEGER,
    PRIMARY KEY (run_id, name, attempt)
) STRICT;

CREATE TABLE approvals (
    id              INTEGER PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs (id),
    stage           TEXT NOT NULL,
    digest          TEXT NOT NULL,
    decision        TEXT NOT NULL,          -- approved | rejected
    approver        TEXT NOT NULL,
    at              TEXT NOT NULL,
    comment         TEXT,
    policy          TEXT NOT NULL,
    override_reason TEXT
) STRICT;
CREATE INDEX approvals_by_run ON approvals (run_id);

-- The request a paused stage waits on (one per stage).
CREATE TABLE pending_approvals (
    run_id  TEXT NOT NULL REFERENCES runs (id),
    stage   TEXT NOT NULL,
    request TEXT NOT NULL,                  -- JSON
    PRIMARY KEY (run_id, stage)
) STRICT;

CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES runs (id),
    time       TEXT NOT NULL,
    stage      TEXT NOT NULL,
    plugin     TEXT NOT NULL,
    capability TEXT NOT NULL,
    allowed    INTEGER NOT NULL,
    detail     TEXT NOT NULL,               -- JSON
    reason     TEXT
) STRICT;
CREATE INDEX audit_events_by_run ON audit_events (run_id);

-- Taken before the run's row exists, so no foreign key on run_id.
CREATE TABLE locks (
    environment TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    owner_pid   INTEGER NOT NULL,
    owner_start INTEGER NOT NULL,
    owner_host  TEXT NOT NULL,
    acquired    TEXT NOT NULL
) STRICT;
