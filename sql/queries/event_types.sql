-- The event-type catalog, and the strict-mode switch applied by migrate/run.
-- Named queries: each block starts with a line "-- name --"; the comment lines after it say
-- what it does. Loaded by pgcourier.db.load_queries() from every file in sql/queries/.

-- event_types_strict --
-- Whether strict mode is on: the trigger's presence is the state, there is no flag to drift.
SELECT EXISTS (
    SELECT FROM pg_catalog.pg_trigger
    WHERE tgrelid = 'courier.outbox'::regclass AND tgname = 'outbox_validate_type_registered'
);

-- event_types_strict_on --
-- (Takes a SHARE ROW EXCLUSIVE lock on the outbox, so it waits for open producer transactions;
-- run only when the mode changes.)
CREATE OR REPLACE TRIGGER outbox_validate_type_registered BEFORE INSERT ON courier.outbox
    FOR EACH ROW EXECUTE FUNCTION courier.outbox_require_registered_type();

-- event_types_strict_off --
DROP TRIGGER IF EXISTS outbox_validate_type_registered ON courier.outbox;

-- insert_event_type --
-- NULL when the name is taken.
INSERT INTO courier.event_types (name, description, schema, example)
VALUES ($1, $2, $3::jsonb, $4::jsonb)
ON CONFLICT (name) DO NOTHING
RETURNING name, description, schema::text AS schema, example::text AS example, created_at,
          updated_at;

-- get_event_type --
SELECT name, description, schema::text AS schema, example::text AS example, created_at,
       updated_at
FROM courier.event_types
WHERE name = $1;

-- lock_event_type --
-- The stored row, locked until the caller's transaction ends, so that an update checks the
-- example against the schema it will be stored beside.
SELECT name, description, schema::text AS schema, example::text AS example, created_at,
       updated_at
FROM courier.event_types
WHERE name = $1
FOR UPDATE;

-- update_event_type --
UPDATE courier.event_types
SET description = $2, schema = $3::jsonb, example = $4::jsonb, updated_at = clock_timestamp()
WHERE name = $1
RETURNING name, description, schema::text AS schema, example::text AS example, created_at,
          updated_at;

-- list_event_types --
SELECT name, description, schema::text AS schema, example::text AS example, created_at,
       updated_at
FROM courier.event_types
ORDER BY name;

-- delete_event_type --
DELETE FROM courier.event_types WHERE name = $1 RETURNING name;

-- event_type_schema_fingerprint --
-- What the payload check needs on every POST /events: whether the type has a schema, and a
-- fingerprint that changes with it (the compiled validator is cached under it). The schema
-- itself is fetched only when the fingerprint is new.
SELECT md5(schema::text) FROM courier.event_types WHERE name = $1 AND schema IS NOT NULL;

-- event_type_schema --
SELECT schema::text FROM courier.event_types WHERE name = $1;
