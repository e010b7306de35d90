-- Capstan run store, schema version 3: the head of each run's audit.jsonl
-- hash chain, the sha256 of its last line, kept with every event (in the
-- transaction that records the event), so that `capstan verify` can tell a
-- log cut short or replaced. NULL: the run has no chained line (it ran
-- before version 3).

ALTER TABLE runs ADD COLUMN audit_head TEXT;
