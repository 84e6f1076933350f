-- Issue 20 item 3: a signal is the pair (verified sender, origin), and
-- independence is counted by sender (docs/policy.md). Rows written before
-- this migration knew only the origin: their sender is marked unverified.
ALTER TABLE signals RENAME COLUMN origin TO sender;
ALTER TABLE signals ADD COLUMN origin TEXT NOT NULL DEFAULT '';
UPDATE signals SET origin = sender, sender = 'unverified:' || sender;
