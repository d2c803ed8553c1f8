-- 0005: payloads cannot be nested past what readers parse; producers need no more than enqueue.
--
-- * Nesting depth. A payload nested thousands of levels deep fits the size limit (3,000 levels is
--   6 KB), but Python's json module and most other readers stop near 1,000 levels, so such an
--   event broke every view of it (API, CLI, dead letters, its Slack message). Every outbox row is
--   now refused past 64 levels of objects and arrays, the payload object itself being level 1.
--   The check is a jsonpath walk that stops at level 64 (strict mode, so arrays are levels too and
--   nothing is visited twice); measured at about half the cost of the size check beside it.
--
-- * Least privilege. courier.enqueue and the two outbox triggers run as their owner (the role that
--   ran `pgcourier migrate`, i.e. the relay's), so a producer role needs only EXECUTE on enqueue,
--   or INSERT on the outbox's four input columns, and can read nothing: not the endpoints' secrets
--   and tokens, not other events. The README gives the role to create (role names are
--   cluster-wide, so this migration creates none).
--   The triggers are definers too, rather than the producer being granted what they touch
--   (SELECT on courier.config, SELECT and UPDATE on courier.relays): a producer could otherwise
--   flip relays' idle flags and read their hosts and pids. A definer's search_path is fixed to
--   pg_catalog then pg_temp, as the Postgres manual advises, so no schema a caller controls can
--   shadow an operator or function inside; every courier name inside is schema-qualified. (A
--   definer with a SET clause costs about 1 microsecond more per call, measured: noise beside an
--   INSERT.)
--   EXECUTE on every courier function is taken from PUBLIC (Postgres grants it by default): a
--   definer function open to every role with USAGE on the schema would let any such role add
--   events, and a producer role should be able to call enqueue and nothing else. The owner keeps
--   everything; a role other than the owner that called courier functions before this migration
--   needs an explicit GRANT EXECUTE (a producer: the role in the README).

CREATE OR REPLACE FUNCTION courier.outbox_validate() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    limit_bytes integer;
    size_bytes integer;
BEGIN
    IF NEW.event_type IS NULL OR NOT courier.valid_event_type(NEW.event_type) THEN
        RAISE EXCEPTION 'courier: invalid event_type %', coalesce(quote_literal(NEW.event_type), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An event type is 1-200 characters of letters, digits, "_", ".", ":" or "-", '
                      || 'starting with a letter or digit, e.g. order.paid';
    END IF;
    IF NEW.payload IS NULL OR jsonb_typeof(NEW.payload) <> 'object' THEN
        RAISE EXCEPTION 'courier: payload must be a JSON object, got %',
                coalesce(jsonb_typeof(NEW.payload), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Wrap the value in an object, e.g. {"value": ...}';
    END IF;
    SELECT c.max_payload_bytes INTO limit_bytes FROM courier.config AS c;
    size_bytes := octet_length(NEW.payload::text);
    IF size_bytes > limit_bytes THEN
        RAISE EXCEPTION 'courier: payload is % bytes, over the limit of % bytes', size_bytes, limit_bytes
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Send a reference to large data instead of the data itself';
    END IF;
    -- Level 0 of the path is the payload object (depth 1), so an object or array found at path
    -- level 64 is the 65th nested one. The walk goes no deeper than level 64 however deep the
    -- value is, and stops at the first match.
    IF jsonb_path_exists(NEW.payload,
                         'strict $.**{64} ? (@.type() == "object" || @.type() == "array")') THEN
        RAISE EXCEPTION 'courier: payload nested deeper than 64 levels'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Flatten the payload: many JSON readers stop near 1,000 levels, and '
                      || 'receivers gain nothing from deep nesting';
    END IF;
    IF NEW.ordering_key IS NOT NULL AND (length(NEW.ordering_key) NOT BETWEEN 1 AND 255) THEN
        RAISE EXCEPTION 'courier: ordering_key must be 1-255 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.idempotency_key IS NOT NULL AND (length(NEW.idempotency_key) NOT BETWEEN 1 AND 255) THEN
        RAISE EXCEPTION 'courier: idempotency_key must be 1-255 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A producer cannot mark its own event as already handled.
    NEW.fanned_out_at := NULL;
    RETURN NEW;
END
$$;

-- The bodies of these two already name every object with its schema (see 0001); only who they
-- run as and the search_path they run with change.
ALTER FUNCTION courier.outbox_wake() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION courier.enqueue(text, jsonb, text, text)
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA courier FROM PUBLIC;
-- And on the functions later migrations create (when the same role runs them, as it should).
ALTER DEFAULT PRIVILEGES IN SCHEMA courier REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
