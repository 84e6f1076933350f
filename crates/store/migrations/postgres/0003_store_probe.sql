-- One row the health probe rewrites while the store is failing: a commit that
-- goes through again is how the gate learns it may accept events (issue 28).
CREATE TABLE store_probe (
    id BIGINT PRIMARY KEY,
    probed_at BIGINT NOT NULL
);
