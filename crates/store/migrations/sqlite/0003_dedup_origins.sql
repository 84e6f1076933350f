-- triage-gate store, version 3: origins that reported a fingerprint in its window
-- (JSON array of strings). A report from a new origin confirms rather than duplicates.
ALTER TABLE dedup ADD COLUMN origins TEXT NOT NULL DEFAULT '[]';
