-- One growing version of the check-in statistics for every instance: a recomputation takes
-- the next version and reads the check-ins in one transaction, so a higher version always
-- describes at least what a lower one did.
CREATE TABLE stats_version (
    id INTEGER PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO stats_version (id, version) VALUES (1, 0);
