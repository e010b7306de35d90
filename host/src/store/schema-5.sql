-- Capstan run store, schema version 5: drift checks (`capstan drift`). One row
-- per check of an environment: the drift run that planned it, when, whether
-- the plan of what is deployed has changes, and the per-stage detail (JSON).

CREATE TABLE drift_checks (
    id INTEGER PRIMARY KEY,
    environment TEXT NOT NULL,
    run_id TEXT NOT NULL,
    checked TEXT NOT NULL,
    drifted INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX drift_checks_by_environment ON drift_checks (environment, checked);
