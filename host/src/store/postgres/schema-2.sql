-- Capstan run store on PostgreSQL, schema version 2: each run's timed stage
-- attempts (succeeded or failed, with a duration) kept with the run,
-- rewritten as each attempt ends (in the same transaction, see end_stage in
-- postgres.rs): `capstan stats` reads them with the runs
-- (store::RunStore::outcomes), one row per run rather than one per attempt
-- (tens of thousands on a long history). A JSON array of [stage,
-- duration_ms, succeeded], one per attempt.

ALTER TABLE runs ADD COLUMN stage_times json NOT NULL DEFAULT '[]';

-- One pass over the attempts, grouped by run (a subquery per run would
-- look each run's attempts up apart). Runs without one keep the default.
UPDATE runs SET stage_times = timed.stage_times
FROM (
    SELECT run_id, json_agg(json_build_array(name, duration_ms, status = 'succeeded')) AS stage_times
    FROM stages
    WHERE status IN ('succeeded', 'failed') AND duration_ms IS NOT NULL
    GROUP BY run_id
) timed
WHERE timed.run_id = runs.id;
