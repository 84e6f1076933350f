-- triage-gate store, version 5: the transactional outbox.
-- SQLite cannot alter a CHECK constraint, so `actions` is rebuilt:
--   id              decision order (rowid of the old table, kept), the action's public id;
--   status 'dead'   a dead letter: attempts ran out or the target refused it for good;
--   target          servicenow | pagerduty | bridge: the concurrency class;
--   attempts        attempts made against the current budget (reset by an operator retry);
--   next_attempt_at when the action is next due (epoch ms), NULL once terminal;
--   last_error      the last failure, bounded and scrubbed of secrets;
--   claimed_by, lease_until  the delivery that holds the action; an expired or
--                   released claim lets another delivery pick it up again.
CREATE TABLE actions_v5 (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          TEXT    NOT NULL REFERENCES runs (run_id),
    kind            TEXT    NOT NULL CHECK (kind IN ('ticket', 'page', 'mim')),
    outcome         TEXT    NOT NULL CHECK (outcome IN ('execute', 'review')),
    status          TEXT    NOT NULL CHECK (status IN ('not_executed', 'pending', 'delivered', 'failed', 'dead')),
    idempotency_key TEXT    NOT NULL UNIQUE,
    planned_json    TEXT    NOT NULL,
    result_json     TEXT,
    review_state    TEXT    CHECK (review_state IN ('open', 'approved', 'rejected', 'expired')),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    target          TEXT    NOT NULL CHECK (target IN ('servicenow', 'pagerduty', 'bridge')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error      TEXT,
    claimed_by      TEXT,
    lease_until     INTEGER,
    UNIQUE (run_id, kind)
);
INSERT INTO actions_v5 (id, run_id, kind, outcome, status, idempotency_key, planned_json,
    result_json, review_state, created_at, updated_at, target, attempts, next_attempt_at)
SELECT rowid, run_id, kind, outcome, status, idempotency_key, planned_json, result_json,
    review_state, created_at, updated_at,
    CASE kind WHEN 'ticket' THEN 'servicenow' WHEN 'page' THEN 'pagerduty' ELSE 'bridge' END,
    0, CASE status WHEN 'pending' THEN created_at END
FROM actions ORDER BY rowid;
DROP TABLE actions;
ALTER TABLE actions_v5 RENAME TO actions;
CREATE INDEX actions_review ON actions (review_state, created_at);
CREATE INDEX actions_outbox ON actions (status, target, id);

-- One row per delivery attempt (the history an operator reads at the API).
CREATE TABLE action_attempts (
    action_id       INTEGER NOT NULL REFERENCES actions (id),
    attempt         INTEGER NOT NULL,              -- 1.. over the action's whole life
    claimed_by      TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER,                       -- NULL: in flight (or the process died)
    outcome         TEXT    CHECK (outcome IN ('delivered', 'retryable', 'throttled', 'permanent', 'interrupted')),
    http_status     INTEGER,
    error           TEXT,                          -- bounded (ATTEMPT_ERROR_CHARS_MAX)
    retry_after_ms  INTEGER,                       -- the wait the outbox chose (Retry-After honoured)
    PRIMARY KEY (action_id, attempt)
);
