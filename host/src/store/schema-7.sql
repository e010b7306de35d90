-- Capstan run store, schema version 7: leased locks.
--
-- owner_host_id: the id of the host running the run or holding the lock
-- (store::owner::host_id: machine, boot and pid namespace), so that two
-- machines with one hostname never judge each other's processes. '' in rows
-- made before version 7, which are judged by hostname.
--
-- lease_until: Unix milliseconds (by the store's clock) until which the
-- holder counts as alive when it runs on another host; the running process
-- renews it (store::lease). NULL: taken before version 7.
--
-- stop_request: `capstan cancel` of a run that runs on another host (JSON: by,
-- reason); its host reads it when it renews its lease, and stops the run.
--
-- lock_releases: every lock released without its run's consent (its host
-- died, lost its lease, or `capstan unlock --force`), shown by `capstan show`.

ALTER TABLE runs ADD COLUMN owner_host_id TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN lease_until INTEGER;
ALTER TABLE runs ADD COLUMN stop_request TEXT;
ALTER TABLE locks ADD COLUMN owner_host_id TEXT NOT NULL DEFAULT '';
ALTER TABLE locks ADD COLUMN lease_until INTEGER;

CREATE TABLE lock_releases (
    id          INTEGER PRIMARY KEY,
    environment TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    holder      TEXT NOT NULL,              -- JSON: the holder's process (Owner)
    why         TEXT NOT NULL,              -- ended | host-died | lease-expired | forced
    by          TEXT NOT NULL,
    reason      TEXT,
    at          TEXT NOT NULL,
    lease_ended TEXT
) STRICT;
CREATE INDEX lock_releases_by_run ON lock_releases (run_id);

-- `runs` lists newest first (julianday: `started` has as many fractional
-- digits as needed, which does not sort as text), all or of one environment.
CREATE INDEX runs_by_start ON runs (julianday(started) DESC, id DESC);
CREATE INDEX runs_by_environment_start ON runs (environment, julianday(started) DESC, id DESC);
