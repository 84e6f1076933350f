-- Incidents opened outside the gate (by a human, by another integration),
-- reported to `POST /v1/evidence/incidents` and matched to the gate's decision
-- for the same service: shadow evidence. One row per (system, external_id), so
-- a report delivered twice counts once.
CREATE TABLE external_incidents (
    system       TEXT    NOT NULL,
    external_id  TEXT    NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('ticket', 'page', 'mim')),
    service      TEXT    NOT NULL,
    environment  TEXT,
    run_id       TEXT,
    gate_outcome TEXT,
    verdict      TEXT    NOT NULL CHECK (verdict IN ('agreed', 'disagreed', 'own', 'unmatched')),
    opened_at    INTEGER NOT NULL,
    recorded_at  INTEGER NOT NULL,
    PRIMARY KEY (system, external_id)
);
CREATE INDEX external_incidents_opened ON external_incidents (opened_at);
-- Matching a report to a run: by correlation ID, or the service's latest decisions.
CREATE INDEX runs_service_decided ON runs (service, decided_at);
CREATE INDEX runs_correlation ON runs (correlation_id);
