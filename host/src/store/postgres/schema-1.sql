-- Capstan run store on PostgreSQL, schema version 1: what the SQLite store
-- has in its versions 1 to 6, in one step. New versions are new files
-- (schema-2.sql, …) listed in postgres/migrate.rs, never edits of this one.
--
-- Times are kept as the RFC 3339 text Capstan wrote, exactly (signed
-- approval statements include them); runs.started_at is the same instant
-- as a timestamptz, to sort runs by. JSON columns are `json`, not `jsonb`:
-- `json` keeps the text as written, so objects keep their key order.
-- Text that is sorted or matched by prefix is COLLATE "C": byte order, as
-- in SQLite, whatever the database's collation.

CREATE TABLE runs (
    id              text COLLATE "C" PRIMARY KEY,
    pipeline        text NOT NULL,
    pipeline_file   text NOT NULL,
    pipeline_digest text NOT NULL,
    environment     text COLLATE "C" NOT NULL,
    author          text NOT NULL,
    kind            text NOT NULL,          -- deploy | rollback | drift
    target          text,                   -- rollback: the run whose outputs it reuses
    undoes          text,                   -- rollback: the run it undoes
    only_stages     json NOT NULL,          -- array of stage names
    run_dir         text NOT NULL,
    status          text NOT NULL,
    started         text NOT NULL,
    -- `started` as an instant (NULL if it is not RFC 3339).
    started_at      timestamptz,
    ended           text,
    -- Did the verification stages (those no other stage needs, e.g. smoke
    -- tests) run, and pass? NULL: they did not run.
    verified        boolean,
    plugins         json NOT NULL,
    owner_pid       bigint NOT NULL,
    owner_start     bigint NOT NULL,
    owner_host      text NOT NULL,
    -- The owner's host id (store::owner::host_id).
    owner_host_id   text NOT NULL DEFAULT '',
    -- Until when (Unix ms, the server's clock) the owner counts as alive
    -- when it runs on another host; renewed while it runs (store::lease).
    lease_until     bigint,
    -- `capstan cancel` from another host (JSON: by, reason), read by the
    -- owner when it renews its lease.
    stop_request    json,
    -- sha256 of the last line of the run's audit.jsonl when an event was
    -- last recorded.
    audit_head      text,
    -- The approvers' keys (allowed_signers text) listed when the run started.
    approvers       text,
    -- Fingerprints of the listed keys the author's ssh-agent held then.
    author_keys     json NOT NULL
);
CREATE INDEX runs_by_environment ON runs (environment, started_at DESC NULLS LAST, id DESC);
CREATE INDEX runs_by_start ON runs (started_at DESC NULLS LAST, id DESC);
CREATE INDEX runs_by_status ON runs (status);
-- Runs named by a suffix of their id (the primary key serves prefixes).
CREATE INDEX runs_by_reversed_id ON runs (reverse(id));

-- One row per attempt: a resumed stage adds a row, earlier ones stay.
CREATE TABLE stages (
    run_id      text NOT NULL REFERENCES runs (id),
    name        text NOT NULL,
    attempt     bigint NOT NULL,
    plugin      text NOT NULL,
    status      text NOT NULL,
    message     text NOT NULL DEFAULT '',
    outputs     json NOT NULL DEFAULT '{}',
    artifacts   json NOT NULL DEFAULT '[]',
    report      json,
    started     text COLLATE "C",
    ended       text COLLATE "C",
    duration_ms bigint,
    PRIMARY KEY (run_id, name, attempt)
);

CREATE TABLE approvals (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id          text NOT NULL REFERENCES runs (id),
    stage           text NOT NULL,
    digest          text NOT NULL,
    decision        text NOT NULL,          -- approved | rejected
    approver        text NOT NULL,
    at              text NOT NULL,
    comment         text,
    policy          text NOT NULL,
    override_reason text,
    -- The approver's SSH signature (armored sshsig) over the approval
    -- statement; NULL for unsigned decisions.
    signature       text
);
CREATE INDEX approvals_by_run ON approvals (run_id);

-- The request a paused stage waits on (one per stage).
CREATE TABLE pending_approvals (
    run_id  text NOT NULL REFERENCES runs (id),
    stage   text COLLATE "C" NOT NULL,
    request json NOT NULL,
    PRIMARY KEY (run_id, stage)
);

-- Every approval request as it was asked, kept after it is answered.
CREATE TABLE approval_requests (
    run_id  text NOT NULL REFERENCES runs (id),
    stage   text NOT NULL,
    digest  text NOT NULL,
    asked   text COLLATE "C" NOT NULL,
    request json NOT NULL,
    -- Insertion order (a request asked again is inserted anew).
    seq     bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (run_id, stage, digest)
);

CREATE TABLE audit_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     text NOT NULL REFERENCES runs (id),
    time       text NOT NULL,
    stage      text NOT NULL,
    plugin     text NOT NULL,
    capability text NOT NULL,
    allowed    boolean NOT NULL,
    detail     json NOT NULL,
    reason     text
);
CREATE INDEX audit_events_by_run ON audit_events (run_id, capability);

-- Taken before the run's row exists, so no foreign key on run_id.
CREATE TABLE locks (
    environment text PRIMARY KEY,
    run_id      text NOT NULL,
    owner_pid   bigint NOT NULL,
    owner_start bigint NOT NULL,
    owner_host  text NOT NULL,
    owner_host_id text NOT NULL DEFAULT '',
    acquired    text NOT NULL,
    lease_until bigint
);

-- Every lock released without its run's consent (its host died, lost its
-- lease, or `capstan unlock --force`), shown by `capstan show`.
CREATE TABLE lock_releases (
    id          bigserial PRIMARY KEY,
    environment text NOT NULL,
    run_id      text COLLATE "C" NOT NULL,
    holder      text NOT NULL,              -- JSON: the holder's process (Owner)
    why         text NOT NULL,              -- ended | host-died | lease-expired | forced
    by          text NOT NULL,
    reason      text,
    at          text NOT NULL,
    lease_ended text
);
CREATE INDEX lock_releases_by_run ON lock_releases (run_id);

-- `capstan drift` checks: one row per check of an environment.
CREATE TABLE drift_checks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    environment text NOT NULL,
    run_id      text NOT NULL,
    checked     text COLLATE "C" NOT NULL,
    drifted     boolean NOT NULL,
    detail      json NOT NULL
);
CREATE INDEX drift_checks_by_environment ON drift_checks (environment, checked);
