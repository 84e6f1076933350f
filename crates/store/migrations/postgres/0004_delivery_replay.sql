-- Deliveries accepted once inside their replay window (signed webhooks: the
-- decoded MAC, timestamp and body digest; SNS: topic and MessageId), kept in
-- the store so a restart or another replica does not accept them again.
-- Pruned past the window.
CREATE TABLE delivery_replay (
    key TEXT PRIMARY KEY,
    until_ms BIGINT NOT NULL
);
CREATE INDEX delivery_replay_until ON delivery_replay (until_ms);
