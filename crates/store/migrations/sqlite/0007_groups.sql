-- Grouping (storm.group): related alerts share one incident.
CREATE TABLE storm_groups (
    key             TEXT    PRIMARY KEY,   -- tg_engine::group_key
    state_json      TEXT    NOT NULL,      -- tg_storm::GroupEntry
    expires_at      INTEGER NOT NULL,
    resolved        INTEGER NOT NULL CHECK (resolved IN (0, 1))
);
CREATE INDEX storm_groups_expires ON storm_groups (expires_at);
