-- triage-gate store, version 2: escalation and flap damping in dedup windows.
-- impact:   the source's impact level when the window opened; a higher level
--           inside the window is an escalation, not a duplicate.
-- resolved: 1 once the source resolved the alert (the window stops suppressing;
--           the row is kept so paged_at survives a re-fire).
-- paged_at: when a page was last executed for the fingerprint (epoch ms).
ALTER TABLE dedup ADD COLUMN impact TEXT NOT NULL DEFAULT 'unknown';
ALTER TABLE dedup ADD COLUMN resolved INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dedup ADD COLUMN paged_at INTEGER;
-- ticket_run: the run whose ticket is open for the fingerprint, kept across an
--           escalation so an escalation does not open a second ticket.
ALTER TABLE dedup ADD COLUMN ticket_run TEXT;
