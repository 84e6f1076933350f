-- The console's per-minute chart reads the last hour of runs and actions by time.
CREATE INDEX runs_received ON runs (received_at);
CREATE INDEX actions_created ON actions (created_at);
