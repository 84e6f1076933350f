-- Columns for the postmortem query (`GET /v1/audit`, `audit show`), filled when
-- a record is sealed; older records are backfilled from their JSON.
-- `subject_run` is the run a record belongs to (a run record's own id, an
-- attempt's or replay's run); `at_ms` is when it happened (a run: received).
ALTER TABLE audit ADD COLUMN at_ms INTEGER;
ALTER TABLE audit ADD COLUMN subject_run TEXT;
ALTER TABLE audit ADD COLUMN correlation_id TEXT;
ALTER TABLE audit ADD COLUMN service TEXT;

UPDATE audit SET
    subject_run = CASE kind WHEN 'run' THEN run_id ELSE json_extract(record_json, '$.run_id') END,
    correlation_id = json_extract(record_json, '$.correlation_id'),
    service = json_extract(record_json, '$.event.service'),
    at_ms = CAST(ROUND((julianday(COALESCE(
        json_extract(record_json, '$.timestamps.received_at'),
        json_extract(record_json, '$.at'))) - 2440587.5) * 86400000.0) AS INTEGER);

CREATE INDEX audit_subject_run ON audit (subject_run);
CREATE INDEX audit_correlation ON audit (correlation_id);
CREATE INDEX audit_service_at ON audit (service, at_ms);
CREATE INDEX audit_at ON audit (at_ms);

-- Where each audit sink has got to: records with a greater seq are still to ship.
CREATE TABLE audit_cursors (
    sink        TEXT    PRIMARY KEY,
    seq         INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    last_error  TEXT
);
