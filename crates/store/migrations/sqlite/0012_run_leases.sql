-- A claimed run is leased to one worker (one gate process or replica): when
-- that worker dies, the lease expires and another takes the run again.
ALTER TABLE runs ADD COLUMN claimed_by TEXT;
ALTER TABLE runs ADD COLUMN lease_until INTEGER;
