-- Capstan run store, schema version 4: signed approvals.
--
-- runs.approvers: the approvers' keys (allowed_signers text) the pipeline
-- listed when the run started; every approval of the run is checked against
-- this copy, so editing the pipeline's allowed_signers later neither adds
-- nor removes an approver of a started run. NULL: no keys were listed, and
-- approvals are names only ("identity not verified").
--
-- approvals.signature: the approver's SSH signature (armored sshsig) over
-- the approval statement (caps::approval::signature::Statement), NULL for
-- unsigned decisions (automatic ones, and those of runs without keys).

ALTER TABLE runs ADD COLUMN approvers TEXT;
ALTER TABLE approvals ADD COLUMN signature TEXT;
