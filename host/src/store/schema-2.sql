-- Capstan run store, schema version 2: every approval request as it was
-- asked (subject, digest, details such as the plan, checklist), kept after
-- it is answered, so that `capstan show` prints what the reviewers saw.
-- pending_approvals still holds only what a paused run waits on.

CREATE TABLE approval_requests (
    run_id  TEXT NOT NULL REFERENCES runs (id),
    stage   TEXT NOT NULL,
    digest  TEXT NOT NULL,
    asked   TEXT NOT NULL,
    request TEXT NOT NULL,                  -- JSON, as in pending_approvals
    PRIMARY KEY (run_id, stage, digest)
) STRICT;
