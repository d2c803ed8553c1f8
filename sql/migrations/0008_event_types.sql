-- 0008: the event-type catalog (issue 13), and the check that strict mode switches on.
--
-- * courier.event_types describes the types producers send: for receivers (a Markdown catalog,
--   `pgcourier event-types docs`), for the admin API (it validates POST /events payloads against
--   a type's JSON Schema) and for strict mode. The schema and example are checked as JSON Schema
--   in Python (the jsonschema library, draft 2020-12) before they are written; the database only
--   holds their shape (an object, or a boolean schema) and size.
--
-- * Strict mode (PGCOURIER_EVENT_TYPES=strict) refuses events whose type is not registered. It is
--   a BEFORE INSERT trigger on courier.outbox that exists only in strict mode: `migrate` and `run`
--   create or drop it (sql/queries/event_types.sql), so open mode, the default, costs producers
--   nothing, and courier.enqueue, a plain INSERT and anything that inserts into the outbox later
--   are all covered by the one trigger. Its name sorts after outbox_validate, so a malformed type
--   is reported as malformed first (BEFORE triggers of one event fire in name order).
--   The check is one primary-key probe. It does not lock the catalog row (that would be a row
--   lock, so a write, on every producer insert): a type deleted while a producer's transaction
--   is open may still be accepted by that transaction, as if it had committed a moment earlier.
--   The function is a SECURITY DEFINER with a fixed search_path like those of 0005: a producer
--   role needs no privilege on courier.event_types, only what the README's snippet grants.

CREATE TABLE courier.event_types (
    name text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    schema jsonb,
    example jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_type_name_valid CHECK (courier.valid_event_type(name)),
    CONSTRAINT event_type_description_short CHECK (length(description) <= 1000),
    CONSTRAINT event_type_schema_shape CHECK (
        schema IS NULL
        OR (jsonb_typeof(schema) IN ('object', 'boolean') AND octet_length(schema::text) <= 262144)
    ),
    CONSTRAINT event_type_example_shape CHECK (
        example IS NULL
        OR (jsonb_typeof(example) = 'object' AND octet_length(example::text) <= 262144)
    )
);

CREATE FUNCTION courier.outbox_require_registered_type() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- A test send (courier.outbox.test, 0007) carries the type an operator asked to try, or
    -- pgcourier.test; it reaches only its target. Producers cannot set the flag (no INSERT
    -- privilege on the column), so this is no way around the catalog.
    IF NEW.test THEN
        RETURN NEW;
    END IF;
    PERFORM FROM courier.event_types AS t WHERE t.name = NEW.event_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'courier: event_type % is not registered', quote_literal(NEW.event_type)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'PGCOURIER_EVENT_TYPES is strict: register the type first '
                      || '(pgcourier event-types add NAME, or POST /api/v1/event-types)';
    END IF;
    RETURN NEW;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA courier FROM PUBLIC;
