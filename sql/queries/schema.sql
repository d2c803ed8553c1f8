-- Migrations bookkeeping and database-wide settings applied by migrate/run.
-- Named queries: each block starts with a line "-- name --"; the comment lines after it say
-- what it does. Loaded by pgcourier.db.load_queries() from every file in sql/queries/.

-- set_max_payload_bytes --
UPDATE courier.config SET max_payload_bytes = $1;

-- bootstrap_migrations --
-- Run by the migrator under its advisory lock, before reading which migrations are applied.
CREATE SCHEMA IF NOT EXISTS courier;
CREATE TABLE IF NOT EXISTS courier.migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- revoke_public_execute --
-- Run at the end of every migrate(): a function is executable by PUBLIC when created, and no
-- default privilege can change that per schema, so each new one is closed here
-- (producers get EXECUTE on courier.enqueue by an explicit GRANT: README, least privilege).
-- Except courier.uuidv7() (0015): it is the outbox id's default before Postgres 18, so every
-- role that may INSERT an event must be able to run it, and it reads and writes nothing.
-- (A database migrated part of the way, as tests do, has no courier.uuidv7() yet.)
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA courier FROM PUBLIC;
DO $$
BEGIN
    IF to_regprocedure('courier.uuidv7()') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION courier.uuidv7() TO PUBLIC;
    END IF;
END
$$;

-- record_migration --
INSERT INTO courier.migrations (version, name, checksum) VALUES ($1, $2, $3);
