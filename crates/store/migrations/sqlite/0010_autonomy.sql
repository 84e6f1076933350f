-- Runtime autonomy caps (the kill switch): `scope` is `all`, `team:<team>` or
-- `service:<service>`; a decision takes the lowest cap that applies, below the
-- catalog's level. Every change is also an audit step record.
CREATE TABLE autonomy_caps (
    scope       TEXT    PRIMARY KEY,
    level       TEXT    NOT NULL CHECK (level IN ('shadow', 'assist', 'limited', 'paging', 'mim')),
    reason      TEXT,
    set_by      TEXT    NOT NULL,
    set_at      INTEGER NOT NULL
);
