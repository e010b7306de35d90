-- Capstan run store, schema version 8: each run's timed stage attempts
-- (succeeded or failed, with a duration) kept with the run, rewritten as each
-- attempt ends (in the same transaction, see end_stage in sqlite.rs):
-- `capstan stats` reads them with the runs (store::RunStore::outcomes), one
-- row per run rather than one per attempt (tens of thousands on a long
-- history). A JSON array of [stage, duration_ms, succeeded], one per attempt.

ALTER TABLE runs ADD COLUMN stage_times TEXT NOT NULL DEFAULT '[]';

UPDATE runs SET stage_times = (
    SELECT json_group_array(
        json_array(name, duration_ms, json(iif(status = 'succeeded', 'true', 'false')))
    )
    FROM stages
    WHERE run_id = runs.id AND status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL
);
