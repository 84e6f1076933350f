-- The audit chain holds step records (breaker transitions) beside the runs'
-- records; `run_id` then holds the step's record id.
ALTER TABLE audit ADD COLUMN kind TEXT NOT NULL DEFAULT 'run' CHECK (kind IN ('run', 'step'));
