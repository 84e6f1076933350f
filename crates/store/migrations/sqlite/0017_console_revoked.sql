-- Console sessions ended by signing out: a copied session cookie is refused
-- until the session would have expired anyway (then the row is pruned).
CREATE TABLE console_revoked (
    sid TEXT PRIMARY KEY,
    until_ms BIGINT NOT NULL
);
