-- pgcourier schema, version 1.
--
-- Model: producers insert events into courier.outbox inside their own transactions. A relay
-- "fans out" each committed event into one courier.deliveries row per matching enabled endpoint,
-- delivers each row over HTTP, and records every HTTP attempt in courier.attempts. A delivery
-- ends 'delivered' or 'dead' (the dead-letter queue is the view courier.dead_letters).
--
-- The migrator runs this file inside one transaction while holding an advisory lock, after
-- creating the schema and courier.migrations itself.

-- Settings the database must know because it enforces them on plain INSERTs.
CREATE TABLE courier.config (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    max_payload_bytes integer NOT NULL DEFAULT 262144 CHECK (max_payload_bytes > 0)
);
INSERT INTO courier.config DEFAULT VALUES;

CREATE TABLE courier.outbox (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Insertion order; used to fan events out roughly oldest first. Not commit order.
    seq bigint GENERATED ALWAYS AS IDENTITY,
    event_type text NOT NULL,
    payload jsonb NOT NULL,
    ordering_key text,
    idempotency_key text,
    -- Time of the INSERT (not of the transaction start) so that "event age" means what it says
    -- even for long producer transactions.
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- NULL until a relay has created this event's deliveries.
    fanned_out_at timestamptz
);

-- Idempotency keys are unique forever (until retention removes the event).
CREATE UNIQUE INDEX outbox_idempotency_key ON courier.outbox (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Only events still to fan out are indexed, so the fan-out claim stays an index range scan
-- over a handful of rows however large the history grows.
CREATE INDEX outbox_pending ON courier.outbox (seq) WHERE fanned_out_at IS NULL;
CREATE INDEX outbox_created ON courier.outbox (created_at);

-- Every row is inserted once and updated once (fanned_out_at); vacuum early so the pending
-- index never has to step over many dead tuples.
ALTER TABLE courier.outbox SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05
);

CREATE FUNCTION courier.valid_event_type(t text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN t ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$';

-- A pattern is an event type in which "*" stands for any run of characters: "order.*",
-- "*.failed", "*". No "%" or "\" can appear, so translating to LIKE needs only "_" escaped.
CREATE FUNCTION courier.valid_patterns(patterns text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN cardinality(patterns) BETWEEN 1 AND 64
    AND NOT EXISTS (
        SELECT 1 FROM unnest(patterns) AS p
        WHERE p IS NULL OR p !~ '^[A-Za-z0-9_.:*-]{1,200}$'
    );

CREATE FUNCTION courier.event_type_matches(patterns text[], event_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN EXISTS (
    SELECT 1 FROM unnest(patterns) AS p
    WHERE event_type LIKE replace(replace(p, '_', '\_'), '*', '%')
);

-- Validation of every outbox row, whether it comes from courier.enqueue() or a plain INSERT.
-- Raises invalid_parameter_value (22023) with a message naming the field.
CREATE FUNCTION courier.outbox_validate() RETURNS trigger
LANGUAGE plpgsql AS $$
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

CREATE TRIGGER outbox_validate BEFORE INSERT ON courier.outbox
    FOR EACH ROW EXECUTE FUNCTION courier.outbox_validate();

-- Relays currently alive. "idle" is true while a relay has found no work and is blocked waiting
-- for a notification. UNLOGGED: it is soft state, rebuilt by heartbeats after a crash.
CREATE UNLOGGED TABLE courier.relays (
    id uuid PRIMARY KEY,
    hostname text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    seen_at timestamptz NOT NULL DEFAULT now(),
    idle boolean NOT NULL DEFAULT false
) WITH (fillfactor = 50, autovacuum_vacuum_threshold = 50, autovacuum_vacuum_scale_factor = 0);

-- Wake-up without serialising producers.
--
-- pg_notify() makes every notifying transaction take one database-wide lock at commit, which
-- caps concurrent producers far below what Postgres can otherwise commit. So producers notify
-- only when some relay is idle, i.e. actually blocked waiting for work; a busy relay will find
-- the new event on its next claim anyway.
--
-- Moreover the first producer that finds an idle relay *claims the wake-up*: it flips that
-- relay's flag back to busy and notifies; producers after it see a busy relay and skip NOTIFY.
-- So there is one notification per idle period, not one per commit while the relay wakes up.
-- FOR UPDATE SKIP LOCKED keeps producers from ever waiting on each other here (no blocking, no
-- deadlock): a producer that finds the flag being flipped by another simply leaves it to that one.
--
-- The check runs as a DEFERRED constraint trigger, i.e. at COMMIT, not at INSERT time: the
-- window between "read the idle flags" and "commit" is then microseconds, not the rest of the
-- producer's transaction. The relay closes the remaining race itself: it marks itself idle,
-- commits that, and only then claims once more before it sleeps. What is left (a producer that
-- read "no idle relay" just before the relay went idle and committed just after the relay's
-- re-check; or a producer that skipped a flag being flipped by one that then rolled back) is
-- picked up by the relay's poll, every second by default.
--
-- The transaction-local setting makes a bulk INSERT do this once, not once per row.
CREATE FUNCTION courier.outbox_wake() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('courier.wake_checked', true) IS DISTINCT FROM 'on' THEN
        PERFORM set_config('courier.wake_checked', 'on', true);
        IF EXISTS (SELECT 1 FROM courier.relays WHERE idle) THEN
            WITH woken AS (
                SELECT id FROM courier.relays WHERE idle FOR UPDATE SKIP LOCKED
            )
            UPDATE courier.relays AS r SET idle = false FROM woken WHERE r.id = woken.id;
            IF FOUND THEN
                PERFORM pg_notify('courier_outbox', '');
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER outbox_wake AFTER INSERT ON courier.outbox
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION courier.outbox_wake();

CREATE FUNCTION courier.enqueue(
    event_type text,
    payload jsonb,
    ordering_key text DEFAULT NULL,
    idempotency_key text DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    new_id uuid;
BEGIN
    IF enqueue.idempotency_key IS NULL THEN
        INSERT INTO courier.outbox (event_type, payload, ordering_key)
        VALUES (enqueue.event_type, enqueue.payload, enqueue.ordering_key)
        RETURNING id INTO new_id;
        RETURN new_id;
    END IF;
    -- ON CONFLICT waits for a concurrent transaction holding the same key; if that one commits,
    -- nothing is inserted here and the SELECT below (a new snapshot under READ COMMITTED) finds it.
    INSERT INTO courier.outbox (event_type, payload, ordering_key, idempotency_key)
    VALUES (enqueue.event_type, enqueue.payload, enqueue.ordering_key, enqueue.idempotency_key)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        SELECT o.id INTO new_id FROM courier.outbox AS o
        WHERE o.idempotency_key = enqueue.idempotency_key;
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

COMMENT ON FUNCTION courier.enqueue(text, jsonb, text, text) IS
    'Add an event to the outbox in the caller''s transaction and return its id. '
    'With an idempotency key already used, return the first event''s id and add nothing.';

CREATE TABLE courier.endpoints (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url text NOT NULL CONSTRAINT endpoint_url_is_http
        CHECK (url ~ '^https?://[^[:space:]/?#]+' AND length(url) <= 2048),
    event_types text[] NOT NULL CONSTRAINT endpoint_event_types_are_patterns
        CHECK (courier.valid_patterns(event_types)),
    secret text NOT NULL CONSTRAINT endpoint_secret_is_whsec
        CHECK (secret ~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$'),
    description text NOT NULL DEFAULT '',
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per (event, endpoint). status: pending -> delivered | dead (dead -> pending on replay).
--
-- Leases: a relay claims a pending row by pushing next_attempt_at to now() + lease and stamping
-- lease_token with its own id. If the relay dies, the row simply becomes due again when the lease
-- runs out: one partial index serves both "due for retry" and "lease expired". A live relay renews
-- the leases it holds, and completions only apply while lease_token still matches.
--
-- No foreign key to courier.endpoints: a foreign-key check takes a KEY SHARE lock on the
-- endpoint row for every delivery inserted, turning each popular endpoint row into a
-- multixact hot spot shared by all relays. Endpoints are disabled, not deleted, by pgcourier.
CREATE TABLE courier.deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id uuid NOT NULL REFERENCES courier.outbox (id) ON DELETE CASCADE,
    endpoint_id uuid NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CONSTRAINT delivery_status_known CHECK (status IN ('pending', 'delivered', 'dead')),
    -- HTTP attempts made so far, never reset.
    attempts integer NOT NULL DEFAULT 0,
    -- attempts at the last replay: the retry schedule restarts from attempts - schedule_base.
    schedule_base integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_token uuid,
    last_attempt_at timestamptz,
    last_status_code integer,
    last_error text,
    delivered_at timestamptz,
    dead_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, endpoint_id)
);

CREATE INDEX deliveries_due ON courier.deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_dead ON courier.deliveries (dead_at) WHERE status = 'dead';
CREATE INDEX deliveries_endpoint ON courier.deliveries (endpoint_id, created_at);

ALTER TABLE courier.deliveries SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.05
);

-- Append-only log of every HTTP attempt. Rows are never updated (a trigger forbids it); retention
-- may delete old ones.
CREATE TABLE courier.attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id bigint NOT NULL,
    event_id uuid NOT NULL,
    endpoint_id uuid NOT NULL,
    attempt integer NOT NULL,
    started_at timestamptz NOT NULL,
    duration_ms double precision NOT NULL,
    status_code integer,
    response_body text,
    error text,
    outcome text NOT NULL CONSTRAINT attempt_outcome_known
        CHECK (outcome IN ('delivered', 'retry', 'dead'))
);

CREATE INDEX attempts_event ON courier.attempts (event_id, id);

ALTER TABLE courier.attempts SET (autovacuum_vacuum_insert_scale_factor = 0.05);

CREATE FUNCTION courier.attempts_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'courier: courier.attempts is append-only'
        USING ERRCODE = 'feature_not_supported';
END
$$;

CREATE TRIGGER attempts_append_only BEFORE UPDATE ON courier.attempts
    FOR EACH ROW EXECUTE FUNCTION courier.attempts_append_only();

CREATE VIEW courier.dead_letters AS
SELECT d.id, d.event_id, d.endpoint_id, d.attempts, d.last_attempt_at, d.last_status_code,
       d.last_error, d.dead_at
FROM courier.deliveries AS d
WHERE d.status = 'dead';
