-- triage-gate store, version 4: per-service paging buckets (in `buckets`, key
-- `page:service:<name>`), the storm-mode circuit breaker and held-back pages.
-- Times are Unix epoch milliseconds (UTC).

-- One breaker per environment; state_json is tg_storm::BreakerState.
CREATE TABLE storm_breaker (
    environment     TEXT    PRIMARY KEY,
    open            INTEGER NOT NULL CHECK (open IN (0, 1)),
    state_json      TEXT    NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- Last time each service alerted in an environment (the breaker's input).
-- Rows older than the breaker window are pruned as events arrive.
CREATE TABLE storm_sightings (
    environment     TEXT    NOT NULL,
    service         TEXT    NOT NULL,
    seen_at         INTEGER NOT NULL,
    PRIMARY KEY (environment, service)
);
CREATE INDEX storm_sightings_seen ON storm_sightings (environment, seen_at);

-- Every breaker transition, in order (also a metric and a log line).
CREATE TABLE storm_transitions (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    environment     TEXT    NOT NULL,
    to_state        TEXT    NOT NULL CHECK (to_state IN ('open', 'closed')),
    at              INTEGER NOT NULL,
    services        INTEGER NOT NULL,
    threshold       INTEGER NOT NULL,
    storm_id        TEXT    NOT NULL,
    run_id          TEXT    NOT NULL,
    reason          TEXT    NOT NULL
);

-- Pages held back by a rate limit or the breaker, per (team, service,
-- environment, reason): the held-back summary. run_ids is a bounded JSON array.
CREATE TABLE storm_held (
    team            TEXT    NOT NULL,
    service         TEXT    NOT NULL,
    environment     TEXT    NOT NULL,
    reason          TEXT    NOT NULL CHECK (reason IN ('rate', 'breaker')),
    lim             TEXT    NOT NULL,   -- the last limit that held (bucket key or storm id)
    count           INTEGER NOT NULL,
    first_at        INTEGER NOT NULL,
    last_at         INTEGER NOT NULL,
    run_ids         TEXT    NOT NULL,
    PRIMARY KEY (team, service, environment, reason)
);

-- When a held-back summary was last sent to a team's chat webhook.
CREATE TABLE storm_summaries (
    team            TEXT    PRIMARY KEY,
    sent_at         INTEGER NOT NULL
);
