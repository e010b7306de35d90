-- Capstan run store, schema version 6: the run author's keys. When the
-- pipeline lists approvers' keys, the fingerprints (SHA256:...) of those of
-- them that the author's ssh-agent held when the run started: a signature by
-- one of them is the author's, whatever name it is listed under. JSON array;
-- NULL before version 6.

ALTER TABLE runs ADD COLUMN author_keys TEXT;
