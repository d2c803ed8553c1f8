-- 0007: sending to customers (issue 13, parts 1, 2 and 4): tenants, direct targeting, test sends.
--
-- * Tenants. An event may carry a tenant and an endpoint may belong to one (1-255 characters,
--   no control characters: a tenant shows up in logs, URLs and CLI output). An endpoint with a
--   tenant receives only that tenant's events; one without receives matching events of every
--   tenant and of none (an internal consumer, an audit log); an event without a tenant reaches
--   only endpoints without one. Idempotency keys are unique per tenant (no tenant is a namespace
--   of its own); ordering keys are per tenant.
-- * Direct targeting. outbox.endpoint_id delivers an event to that one endpoint whatever its
--   patterns (still within its tenant). The target must exist and not be deleted when the event
--   is written, and a tenant given beside it must be the endpoint's (or the endpoint has none);
--   without a tenant the event takes the endpoint's. Checked by the outbox trigger, so a plain
--   INSERT is held to it too, and nothing is written when it fails.
-- * Test sends. outbox.test marks an event an operator sent to try an endpoint (always
--   targeted); the relay treats it as any other event.
--
-- Fan-out moves into courier.fan_out(), which courier.claim calls as its step 1: who receives an
-- event is decided in one small function, and later changes to the claim's steps 2-3 need not
-- repeat it.

-- Printable text of 1-255 characters (control characters would let a tenant forge log lines and
-- break the per-tenant ordering key below).
CREATE FUNCTION courier.valid_tenant(t text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN length(t) BETWEEN 1 AND 255 AND t !~ '[[:cntrl:]]';

-- ADD COLUMN without a default is metadata only: no rewrite of the outbox's history. (The
-- constant default of "test" is stored in the catalog, also without a rewrite.)
ALTER TABLE courier.outbox
    ADD COLUMN tenant text,
    ADD COLUMN endpoint_id uuid,
    ADD COLUMN test boolean NOT NULL DEFAULT false;

-- (The endpoints table is small: the check's scan of it costs nothing.)
ALTER TABLE courier.endpoints
    ADD COLUMN tenant text CONSTRAINT endpoint_tenant_valid CHECK (courier.valid_tenant(tenant));

-- What the API shows of an endpoint: the view of 0003 with the tenant appended.
CREATE OR REPLACE VIEW courier.endpoint_public AS
SELECT id, url, event_types, description, enabled, disabled_reason, disabled_at,
       signature_scheme, timeout_seconds, headers::text AS headers, permanent_statuses,
       max_in_flight, rate_limit,
       CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END
           AS previous_secret_expires_at,
       circuit_state, consecutive_failures, failing_since,
       CASE WHEN paused_until > now() THEN paused_until END AS paused_until,
       kind, slack_channel, slack_token IS NOT NULL AS slack_token_set, template, managed,
       created_at, updated_at, tenant
FROM courier.endpoints
WHERE deleted_at IS NULL;

-- Idempotency keys per tenant. No tenant is its own namespace: '' stands for it, and no tenant
-- can be '' (1-255 characters). (NULLS NOT DISTINCT would say the same, but needs Postgres 15.)
-- The new index is built before the old one goes, so the key is enforced throughout; building
-- it reads the outbox once (only the rows with a key are indexed).
CREATE UNIQUE INDEX outbox_tenant_idempotency_key
    ON courier.outbox ((coalesce(tenant, '')), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX courier.outbox_idempotency_key;

-- One tenant's events, newest first (event listings and per-tenant counts filtered by tenant).
-- Partial: producers that use no tenant pay nothing for it, and the rows of before this
-- migration (all without a tenant) are not indexed.
CREATE INDEX outbox_tenant_created ON courier.outbox (tenant, created_at, id)
    WHERE tenant IS NOT NULL;

-- The validation of 0005 (unchanged above the tenant check), plus the tenant and the target.
CREATE OR REPLACE FUNCTION courier.outbox_validate() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    limit_bytes integer;
    size_bytes integer;
    target record;
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
    -- (See 0005 for the depth walk.)
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
    IF NEW.tenant IS NOT NULL AND NOT courier.valid_tenant(NEW.tenant) THEN
        RAISE EXCEPTION 'courier: tenant must be 1-255 characters without control characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The target is checked only when there is one: producers that do not target pay nothing.
    -- One primary-key probe. The message does not say which tenant the endpoint has: a producer
    -- role may not read endpoints.
    IF NEW.endpoint_id IS NOT NULL THEN
        SELECT ep.tenant, ep.deleted_at INTO target
        FROM courier.endpoints AS ep WHERE ep.id = NEW.endpoint_id;
        IF NOT FOUND OR target.deleted_at IS NOT NULL THEN
            RAISE EXCEPTION 'courier: endpoint_id % is not an endpoint (unknown or deleted)',
                    NEW.endpoint_id
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        -- (An endpoint without a tenant takes every tenant's events.)
        IF NEW.tenant IS NOT NULL AND target.tenant <> NEW.tenant THEN
            RAISE EXCEPTION 'courier: endpoint % does not belong to tenant %', NEW.endpoint_id,
                    quote_literal(NEW.tenant)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Target an endpoint of that tenant, or leave the tenant out: the '
                          || 'event then takes the endpoint''s';
        END IF;
        -- An event sent to a tenant's endpoint is that tenant's (its listings, its stats).
        NEW.tenant := coalesce(NEW.tenant, target.tenant);
    END IF;
    -- A producer cannot mark its own event as already handled.
    NEW.fanned_out_at := NULL;
    RETURN NEW;
END
$$;

-- enqueue gains tenant and endpoint_id. Calls that name 2-4 arguments (or pass them by position)
-- keep working through the defaults; a 6-argument overload beside the old 4-argument function
-- would make such calls ambiguous, so the old one goes. Roles granted EXECUTE on it (the
-- README's producer role) get the new one, and roles granted INSERT on the outbox's input
-- columns get the two new ones: an upgrade takes nothing away from a producer.
CREATE TEMPORARY TABLE enqueue_grantees ON COMMIT DROP AS
SELECT DISTINCT a.grantee::regrole::text AS role
FROM pg_proc AS p, aclexplode(p.proacl) AS a
WHERE p.oid = 'courier.enqueue(text, jsonb, text, text)'::regprocedure
  AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner AND a.grantee <> 0;

DROP FUNCTION courier.enqueue(text, jsonb, text, text);

CREATE FUNCTION courier.enqueue(
    event_type text,
    payload jsonb,
    ordering_key text DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    tenant text DEFAULT NULL,
    endpoint_id uuid DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    new_id uuid;
BEGIN
    IF enqueue.idempotency_key IS NULL THEN
        INSERT INTO courier.outbox (event_type, payload, ordering_key, tenant, endpoint_id)
        VALUES (enqueue.event_type, enqueue.payload, enqueue.ordering_key, enqueue.tenant,
                enqueue.endpoint_id)
        RETURNING id INTO new_id;
        RETURN new_id;
    END IF;
    -- As in 0001: ON CONFLICT waits for a concurrent transaction holding the same key (now the
    -- same key of the same tenant); if it commits, the SELECT below finds its event.
    INSERT INTO courier.outbox (event_type, payload, ordering_key, idempotency_key, tenant,
                                endpoint_id)
    VALUES (enqueue.event_type, enqueue.payload, enqueue.ordering_key, enqueue.idempotency_key,
            enqueue.tenant, enqueue.endpoint_id)
    ON CONFLICT ((coalesce(tenant, '')), idempotency_key) WHERE idempotency_key IS NOT NULL
        DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        -- The key's namespace is the tenant the row would have had: the one given, else the
        -- target's (the trigger's rule; the trigger has checked the target by now).
        SELECT o.id INTO new_id FROM courier.outbox AS o
        WHERE coalesce(o.tenant, '') = coalesce(
                  enqueue.tenant,
                  (SELECT ep.tenant FROM courier.endpoints AS ep WHERE ep.id = enqueue.endpoint_id),
                  '')
          AND o.idempotency_key = enqueue.idempotency_key;
    END IF;
    IF new_id IS NULL THEN
        RAISE EXCEPTION 'courier: idempotency_key % is taken by an event this transaction cannot see',
                quote_literal(enqueue.idempotency_key)
            USING ERRCODE = 'serialization_failure',
                  HINT = 'Retry the transaction, or enqueue under READ COMMITTED';
    END IF;
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION courier.enqueue(text, jsonb, text, text, text, uuid) IS
    'Add an event to the outbox in the caller''s transaction and return its id. '
    'With an idempotency key already used (by the same tenant), return the first event''s id '
    'and add nothing. tenant: only that tenant''s endpoints (and those without a tenant) receive '
    'it; endpoint_id: only that endpoint receives it, whatever its patterns.';

REVOKE EXECUTE ON FUNCTION courier.enqueue(text, jsonb, text, text, text, uuid) FROM PUBLIC;

DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN SELECT g.role FROM enqueue_grantees AS g LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION courier.enqueue(text, jsonb, text, text, text, uuid) TO %s',
                       grantee);
    END LOOP;
    FOR grantee IN
        SELECT DISTINCT a.grantee::regrole::text
        FROM pg_attribute AS att, aclexplode(att.attacl) AS a
        WHERE att.attrelid = 'courier.outbox'::regclass AND att.attname = 'event_type'
          AND a.privilege_type = 'INSERT' AND a.grantee <> 0
    LOOP
        EXECUTE format('GRANT INSERT (tenant, endpoint_id) ON courier.outbox TO %s', grantee);
    END LOOP;
END
$$;

-- Fan out up to p_fan_out events not yet fanned out (step 1 of courier.claim; the rules and the
-- statement shapes of 0003, 0004 and 0006, with who receives what extended):
-- * a targeted event (endpoint_id) goes to that endpoint alone, whatever its patterns and
--   whenever it was created (it existed when the event was written: the trigger checked);
-- * any other event goes to each endpoint whose patterns match and that existed when the event
--   was created;
-- * either way only within the tenant: an endpoint with a tenant takes only that tenant's
--   events; one without takes every tenant's and those of none. (Checked for targeted events
--   too, so that an endpoint moved to another tenant since is not sent the old tenant's.)
-- Disabled endpoints get theirs too, held until enabled again; deleted ones get nothing.
-- Serialised across relays by a try-lock (per-key order rests on it: see 0003); returns how many
-- events it took, 0 when another relay holds the lock.
--
-- Ordering keys are per tenant: the queue's key is the event's key prefixed with its tenant and a
-- unit separator (chr(31), which no tenant contains), so two tenants' "order-1" are delivered
-- independently at an endpoint that takes both, and the claim's key check (endpoint, key, id)
-- and its index queue_key_order work unchanged. Events without a tenant keep their key as is
-- (rows queued before this migration stay in step). The prefixed key is what the queue, the dead
-- letters and the history show; receivers never see it.
CREATE FUNCTION courier.fan_out(p_fan_out integer) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    fresh uuid[];
BEGIN
    IF NOT pg_try_advisory_xact_lock(1668247919, 0) THEN
        RETURN 0;
    END IF;
    SELECT array_agg(o.id ORDER BY o.seq) INTO fresh
    FROM (
        SELECT o.id, o.seq
        FROM courier.outbox AS o
        WHERE o.fanned_out_at IS NULL
        ORDER BY o.seq
        LIMIT p_fan_out
        -- No row lock: the advisory lock keeps relays apart, and skipping rows that other
        -- transactions lock would let a later event of their key go first (see 0004).
    ) AS o;
    IF fresh IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE courier.outbox AS o SET fanned_out_at = now() WHERE o.id = ANY (fresh);
    INSERT INTO courier.queue (event_id, endpoint_id, ordering_key)
    SELECT o.id, ep.id,
           CASE WHEN o.tenant IS NULL THEN o.ordering_key
                ELSE o.tenant || chr(31) || o.ordering_key END
    FROM courier.outbox AS o
    JOIN courier.endpoints AS ep
      ON ep.deleted_at IS NULL
     AND (ep.tenant IS NULL OR ep.tenant = o.tenant)
     AND (ep.id = o.endpoint_id
          OR (o.endpoint_id IS NULL AND ep.created_at <= o.created_at
              AND o.event_type LIKE ANY (ep.like_patterns)))
    WHERE o.id = ANY (fresh)
    -- Ids follow the events' order: the claim's key check relies on it.
    ORDER BY o.seq, ep.id;
    RETURN cardinality(fresh);
END
$$;

COMMENT ON FUNCTION courier.fan_out(integer) IS
    'Step 1 of courier.claim: create the deliveries of up to p_fan_out fresh events (patterns, '
    'tenants, direct targets). Returns the number of events taken.';

-- The claim of 0006 with its step 1 moved into courier.fan_out; steps 2 and 3 are unchanged.
CREATE OR REPLACE FUNCTION courier.claim(
    p_limit integer, p_lease double precision, p_relay uuid, p_fan_out integer
)
RETURNS TABLE (
    id bigint, event_id uuid, endpoint_id uuid, attempts integer, schedule_base integer,
    event_type text, payload text, created_at timestamptz, ordering_key text, url text,
    timeout_seconds double precision, headers text, secrets text[], signature_scheme text,
    permanent_statuses integer[], troubled boolean, kind text, slack_channel text,
    slack_token text, template text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    locked uuid[];
BEGIN
    -- 1. Fan out (courier.fan_out, 0007): the rules of who receives an event live there.
    IF p_fan_out > 0 THEN
        PERFORM courier.fan_out(p_fan_out);
    END IF;

    -- 2. Endpoints with due work that may take more, locked. (This statement sees the
    -- deliveries just created: they are this transaction's own.)
    SELECT array_agg(c.id) INTO locked
    FROM (
        SELECT ep.id
        FROM courier.endpoints AS ep
        WHERE ep.enabled
          AND (ep.paused_until IS NULL OR ep.paused_until <= now())
          AND (ep.circuit_state = 'closed' OR ep.circuit_until <= now())
          AND coalesce(courier.rate_tokens_now(ep), 1) >= 1
          AND EXISTS (
              SELECT 1 FROM courier.queue AS q
              WHERE q.endpoint_id = ep.id AND q.due_at <= now())
        -- Random order: when there is more work than p_limit, no endpoint is always last.
        ORDER BY random()
        LIMIT greatest(p_limit, 16)
    ) AS c
    -- (Outside the LIMITed subquery, so only those candidates are locked.)
    WHERE pg_try_advisory_xact_lock(1668247919, hashtext(c.id::text));

    IF locked IS NULL THEN
        RETURN;
    END IF;

    -- 3. A new statement, so a fresh snapshot: what each locked endpoint holds now.
    RETURN QUERY
    WITH room AS (
        SELECT ep.id AS endpoint_id,
               greatest(0, least(
                   CASE WHEN ep.circuit_state = 'closed' THEN ep.max_in_flight - held.n
                        -- The one probe of a circuit due for it. (Due checked again here: a
                        -- circuit that opened since step 2's snapshot must not probe at once.)
                        WHEN held.n = 0 AND ep.circuit_until <= now() THEN 1
                        ELSE 0 END,
                   coalesce(floor(courier.rate_tokens_now(ep))::integer, p_limit))) AS slots
        FROM courier.endpoints AS ep
        CROSS JOIN LATERAL (
            SELECT count(*)::integer AS n FROM courier.queue AS q
            WHERE q.endpoint_id = ep.id AND q.lease_token IS NOT NULL AND q.due_at > now()
        ) AS held
        WHERE ep.id = ANY (locked)
    ), picked AS (
        SELECT x.id
        FROM room AS r
        CROSS JOIN LATERAL (
            SELECT q.id
            FROM courier.queue AS q
            WHERE q.endpoint_id = r.endpoint_id AND q.due_at <= now()
              AND (q.ordering_key IS NULL OR NOT EXISTS (
                  SELECT 1 FROM courier.queue AS h
                  WHERE h.endpoint_id = q.endpoint_id AND h.ordering_key = q.ordering_key
                    AND h.id < q.id))
            ORDER BY q.due_at
            LIMIT r.slots
            FOR UPDATE SKIP LOCKED
        ) AS x
        LIMIT p_limit
    ), leased AS (
        UPDATE courier.queue AS q
        SET due_at = now() + make_interval(secs => p_lease), lease_token = p_relay
        FROM picked
        WHERE q.id = picked.id
        RETURNING q.id, q.event_id, q.endpoint_id, q.attempts, q.schedule_base, q.ordering_key
    ), per_endpoint AS (
        SELECT l.endpoint_id, count(*) AS n FROM leased AS l GROUP BY l.endpoint_id
    ), spent AS (
        -- Rate tokens spent, and circuits whose probe just left: only those rows are written.
        UPDATE courier.endpoints AS ep
        SET rate_tokens = CASE WHEN ep.rate_limit IS NULL THEN ep.rate_tokens
                               ELSE courier.rate_tokens_now(ep) - pe.n END,
            rate_tokens_at = CASE WHEN ep.rate_limit IS NULL THEN ep.rate_tokens_at ELSE now() END,
            circuit_state = CASE WHEN ep.circuit_state = 'closed' THEN 'closed' ELSE 'half_open' END,
            circuit_until = CASE WHEN ep.circuit_state = 'closed' THEN ep.circuit_until
                                 ELSE now() + make_interval(secs => p_lease) END
        FROM per_endpoint AS pe
        WHERE ep.id = pe.endpoint_id AND (ep.rate_limit IS NOT NULL OR ep.circuit_state <> 'closed')
    )
    SELECT l.id, l.event_id, l.endpoint_id, l.attempts, l.schedule_base,
           o.event_type, o.payload::text, o.created_at, l.ordering_key, ep.url,
           ep.timeout_seconds, ep.headers::text,
           CASE WHEN ep.previous_secret_expires_at > now()
                THEN ARRAY[ep.secret, ep.previous_secret] ELSE ARRAY[ep.secret] END,
           ep.signature_scheme, ep.permanent_statuses,
           (ep.consecutive_failures > 0 OR ep.circuit_state <> 'closed'
            OR ep.failing_since IS NOT NULL),
           ep.kind, ep.slack_channel, ep.slack_token, ep.template
    FROM leased AS l
    CROSS JOIN LATERAL (
        SELECT o.event_type, o.payload, o.created_at
        FROM courier.outbox AS o WHERE o.id = l.event_id LIMIT 1
    ) AS o
    JOIN courier.endpoints AS ep ON ep.id = l.endpoint_id;
END
$$;

-- New functions of this migration: as 0005, EXECUTE for the owner only.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA courier FROM PUBLIC;
