-- triage-gate store, version 1. Times are Unix epoch milliseconds (UTC).

-- One row per run: an accepted event and everything decided about it.
CREATE TABLE runs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,   -- acceptance order
    run_id          TEXT    NOT NULL UNIQUE,
    correlation_id  TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'classifying', 'decided', 'completed')),
    source          TEXT    NOT NULL,
    service         TEXT    NOT NULL,
    environment     TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    event_json      TEXT    NOT NULL,   -- NormalizedEvent, already redacted
    submitted_by    TEXT,
    received_at     INTEGER NOT NULL,
    classification_json TEXT,           -- what the classifier said (or why it was skipped/rejected)
    classified_at   INTEGER,
    decision_json   TEXT,
    decided_at      INTEGER,
    completed_at    INTEGER,
    audit_seq       INTEGER,
    audit_hash      TEXT,
    review_state    TEXT    CHECK (review_state IN ('open', 'approved', 'rejected', 'expired'))
                            -- run-level review (no planned action, e.g. a rejected model answer)
);
CREATE INDEX runs_status ON runs (status, seq);
CREATE INDEX runs_fingerprint ON runs (fingerprint);

-- One row per (run, action) the decision planned: executed or drafted for review.
CREATE TABLE actions (
    run_id          TEXT    NOT NULL REFERENCES runs (run_id),
    kind            TEXT    NOT NULL CHECK (kind IN ('ticket', 'page', 'mim')),
    outcome         TEXT    NOT NULL CHECK (outcome IN ('execute', 'review')),
    status          TEXT    NOT NULL CHECK (status IN ('not_executed', 'pending', 'delivered', 'failed')),
    idempotency_key TEXT    NOT NULL UNIQUE,
    planned_json    TEXT    NOT NULL,
    result_json     TEXT,
    review_state    TEXT    CHECK (review_state IN ('open', 'approved', 'rejected', 'expired')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (run_id, kind)
);
CREATE INDEX actions_review ON actions (review_state, created_at);

-- Duplicate suppression windows, one per fingerprint.
CREATE TABLE dedup (
    fingerprint     TEXT    PRIMARY KEY,
    first_run_id    TEXT    NOT NULL,
    opened_at       INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);

-- Paging token buckets (per team and global), in milli-tokens.
CREATE TABLE buckets (
    key             TEXT    PRIMARY KEY,
    tokens_milli    INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- Last sighting of a service by an origin (independent signals).
CREATE TABLE signals (
    key             TEXT    NOT NULL,   -- service@environment
    origin          TEXT    NOT NULL,
    seen_at         INTEGER NOT NULL,
    PRIMARY KEY (key, origin)
);

-- Open major incidents per service.
CREATE TABLE mim (
    service         TEXT    PRIMARY KEY,
    run_id          TEXT    NOT NULL,
    expires_at      INTEGER NOT NULL
);

-- The audit chain: exactly one record per run, hash-chained in seq order.
CREATE TABLE audit (
    seq             INTEGER PRIMARY KEY,
    run_id          TEXT    NOT NULL UNIQUE,
    hash            TEXT    NOT NULL,
    record_json     TEXT    NOT NULL
);
