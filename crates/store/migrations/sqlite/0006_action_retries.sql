-- triage-gate store, version 6: operator retries of dead letters, attributed.
-- One row per `POST /v1/actions/{id}/retry` (or `triage-gate actions retry`):
--   after_attempt  the number of attempts recorded before the retry (orders it
--                  among the action's attempts in the history);
--   budget_spent   the attempts of the spent budget the retry reset to 0;
--   retried_by     the verified caller's label (JWT `sub`, with the client id);
--                  NULL when inbound identity is disabled;
--   retried_at     when (epoch ms, the server's clock).
CREATE TABLE action_retries (
    action_id       INTEGER NOT NULL REFERENCES actions (id),
    after_attempt   INTEGER NOT NULL,
    budget_spent    INTEGER NOT NULL,
    retried_by      TEXT,
    retried_at      INTEGER NOT NULL
);
CREATE INDEX action_retries_action ON action_retries (action_id, after_attempt);
