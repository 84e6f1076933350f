-- One gate process ships a sink at a time: the holder of the cursor's lease.
-- When it dies, the lease expires and another replica ships from the cursor.
ALTER TABLE audit_cursors ADD COLUMN owner TEXT;
ALTER TABLE audit_cursors ADD COLUMN lease_until INTEGER;
