-- 0006: deliveries split by life stage, so that no hot statement's plan depends on statistics
-- (issue 10; the research and measurements are in docs/design/queue-split.md).
--
-- Until now one table, courier.deliveries, held every delivery ever made: a few hundred pending
-- rows beside millions finished. Every hot predicate (status = 'pending') picked those few out of
-- the many, and whether the planner believed that depended on statistics that a queue has stale
-- by nature (taken when it was empty, or never). Without enable_seqscan = off, generic plans then
-- seq-scanned the whole history; with it, Postgres <= 17 priced every statement at 1e10 and
-- JIT-compiled it on every call. Now:
--
-- * courier.queue: one row per delivery not finished yet (due, leased, or waiting for a retry),
--   DELETEd when it ends. Its size is the work in progress, so a planner that knows nothing still
--   reads the live table size and every plan is the cheap one. No status column: nothing whose
--   selectivity has to be guessed.
-- * courier.dead_letters: dead deliveries (a table now; before, a view of that name). Replay
--   moves a row back to the queue, discard moves it to the history.
-- * courier.delivery_history: finished deliveries (delivered | discarded), written once by INSERT.
--   It is the old courier.deliveries renamed (metadata only, no rewrite); only primary-key and
--   (event_id, endpoint_id) lookups read it.
-- * courier.deliveries: a read-only view of the three with the old columns and status, so that
--   operators' queries keep working. Writes go to the tables.
--
-- A delivery keeps its id as it moves between the three (replay keeps webhook-id and key order).
-- Relays of an older version must be stopped before this runs: their statements name
-- courier.deliveries' status. Leased rows move with their lease; after the upgrade they are sent
-- again when it runs out (same webhook-id: receivers deduplicate).

-- "*" patterns as LIKE patterns, computed when an endpoint is written instead of once per
-- (event, endpoint) pair at every fan-out: courier.event_type_matches() has a sub-select, so
-- Postgres cannot inline it, and each call costs ~40 us (measured), against well under 1 us
-- for an inline LIKE ANY.
CREATE FUNCTION courier.like_patterns(patterns text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY(SELECT replace(replace(p, '_', '\_'), '*', '%') FROM unnest(patterns) AS p);

ALTER TABLE courier.endpoints
    ADD COLUMN like_patterns text[] GENERATED ALWAYS AS (courier.like_patterns(event_types)) STORED;

-- Ids move with a delivery between the three tables, so they come from one sequence.
CREATE SEQUENCE courier.delivery_ids;
SELECT setval('courier.delivery_ids', coalesce((SELECT max(id) FROM courier.deliveries), 0) + 1,
              false);
ALTER TABLE courier.deliveries ALTER COLUMN id DROP IDENTITY;
-- (pgcourier always moves a delivery with its id; the default is for rows written by hand,
-- e.g. history loaded for a benchmark.)
ALTER TABLE courier.deliveries ALTER COLUMN id SET DEFAULT nextval('courier.delivery_ids');
ALTER TABLE courier.deliveries RENAME TO delivery_history;

CREATE TABLE courier.queue (
    id bigint PRIMARY KEY DEFAULT nextval('courier.delivery_ids'),
    -- No foreign keys: each costs an RI query per inserted row (0.1 ms measured), and the
    -- queue is written once per delivery per step.
    event_id uuid NOT NULL,
    endpoint_id uuid NOT NULL,
    ordering_key text,
    -- HTTP attempts made so far, never reset.
    attempts integer NOT NULL DEFAULT 0,
    -- attempts at the last replay: the retry schedule restarts from attempts - schedule_base.
    schedule_base integer NOT NULL DEFAULT 0,
    -- When the next attempt is due; while leased, when the lease runs out. One index then
    -- serves "due", "retry due" and "lease expired" (a relay that died simply loses its leases).
    due_at timestamptz NOT NULL DEFAULT now(),
    lease_token uuid,
    last_attempt_at timestamptz,
    last_status_code integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, endpoint_id)
-- Every row is inserted and deleted once: vacuum after a fixed number of changes, not a fraction
-- of a table that is small by design (the relay's housekeeping vacuums it too when autovacuum
-- is off; see PgStore.reap).
) WITH (autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_scale_factor = 0,
        autovacuum_vacuum_insert_threshold = 1000, autovacuum_vacuum_insert_scale_factor = 0,
        autovacuum_analyze_threshold = 1000, autovacuum_analyze_scale_factor = 0,
        autovacuum_vacuum_cost_delay = 0);

-- Claims and next_due walk each endpoint's rows in due order, only as far as the room.
CREATE INDEX queue_endpoint_due ON courier.queue (endpoint_id, due_at);
-- Per-key order: the head of a key at an endpoint is its queued delivery with the lowest id.
CREATE INDEX queue_key_order ON courier.queue (endpoint_id, ordering_key, id)
    WHERE ordering_key IS NOT NULL;
-- In flight per endpoint, for max_in_flight: the count costs the work in flight, not the backlog.
CREATE INDEX queue_leased ON courier.queue (endpoint_id) WHERE lease_token IS NOT NULL;

DROP VIEW courier.dead_letters;
CREATE TABLE courier.dead_letters (
    id bigint PRIMARY KEY DEFAULT nextval('courier.delivery_ids'),
    event_id uuid NOT NULL,
    endpoint_id uuid NOT NULL,
    ordering_key text,
    attempts integer NOT NULL DEFAULT 0,
    schedule_base integer NOT NULL DEFAULT 0,
    last_attempt_at timestamptz,
    last_status_code integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    dead_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, endpoint_id)
);
-- Listings page newest first by (dead_at, id), all or per endpoint.
CREATE INDEX dead_letters_dead_at ON courier.dead_letters (dead_at, id);
CREATE INDEX dead_letters_endpoint ON courier.dead_letters (endpoint_id, dead_at, id);

-- Move the open rows; what stays in the history is finished (delivered | discarded). The history
-- is not rewritten: a DELETE of the few open rows, DROP INDEX, metadata-only ALTERs.
INSERT INTO courier.queue (id, event_id, endpoint_id, ordering_key, attempts, schedule_base,
                           due_at, lease_token, last_attempt_at, last_status_code, last_error,
                           created_at)
SELECT id, event_id, endpoint_id, ordering_key, attempts, schedule_base, next_attempt_at,
       lease_token, last_attempt_at, last_status_code, last_error, created_at
FROM courier.delivery_history WHERE status = 'pending';
INSERT INTO courier.dead_letters (id, event_id, endpoint_id, ordering_key, attempts,
                                  schedule_base, last_attempt_at, last_status_code, last_error,
                                  created_at, dead_at)
SELECT id, event_id, endpoint_id, ordering_key, attempts, schedule_base, last_attempt_at,
       last_status_code, last_error, created_at, coalesce(dead_at, now())
FROM courier.delivery_history WHERE status = 'dead';
-- (Through deliveries_endpoint_open: the open rows only.)
DELETE FROM courier.delivery_history WHERE status IN ('pending', 'dead');

DROP INDEX courier.deliveries_endpoint_due, courier.deliveries_key_order,
           courier.deliveries_leased, courier.deliveries_dead, courier.deliveries_endpoint_open;
ALTER TABLE courier.delivery_history
    -- An RI query per history INSERT otherwise; outbox rows are never deleted by pgcourier.
    DROP CONSTRAINT deliveries_event_id_fkey,
    DROP CONSTRAINT delivery_status_known,
    -- NOT VALID: checked for new rows, no scan of the history (its rows were just checked).
    ADD CONSTRAINT delivery_status_known CHECK (status IN ('delivered', 'discarded')) NOT VALID;
-- (next_attempt_at, lease_token and schedule_base stay, unused by finished rows.)
ALTER TABLE courier.delivery_history SET (autovacuum_vacuum_insert_scale_factor = 0.05);

-- Today's columns and statuses over the three tables, for reading. Nothing in pgcourier's hot
-- path reads it.
CREATE VIEW courier.deliveries AS
SELECT q.id, q.event_id, q.endpoint_id, 'pending'::text AS status, q.attempts, q.schedule_base,
       q.due_at AS next_attempt_at, q.lease_token, q.last_attempt_at, q.last_status_code,
       q.last_error, NULL::timestamptz AS delivered_at, NULL::timestamptz AS dead_at,
       q.created_at, NULL::timestamptz AS discarded_at, q.ordering_key
FROM courier.queue AS q
UNION ALL
SELECT d.id, d.event_id, d.endpoint_id, 'dead', d.attempts, d.schedule_base, d.dead_at, NULL,
       d.last_attempt_at, d.last_status_code, d.last_error, NULL, d.dead_at, d.created_at, NULL,
       d.ordering_key
FROM courier.dead_letters AS d
UNION ALL
SELECT h.id, h.event_id, h.endpoint_id, h.status, h.attempts, h.schedule_base,
       h.next_attempt_at, NULL, h.last_attempt_at, h.last_status_code, h.last_error,
       h.delivered_at, h.dead_at, h.created_at, h.discarded_at, h.ordering_key
FROM courier.delivery_history AS h;

COMMENT ON VIEW courier.deliveries IS
    'Every delivery with its status (pending | dead | delivered | discarded), read-only: '
    'courier.queue, courier.dead_letters and courier.delivery_history.';

-- Lease up to p_limit due deliveries to relay p_relay for p_lease seconds: the rules of 0003/0004
-- (policies, half-open probe, key order, fan-out to endpoints created at or before the event),
-- on courier.queue. What changes is the shape of each statement, so that each has one sensible
-- plan at any statistics:
-- * the fan-out takes its events by the ordered partial index outbox_pending (ORDER BY seq LIMIT)
--   into an array, then marks and reads them by primary key (= ANY), never by a join whose size
--   the planner must guess;
-- * from claimed rows into the outbox, one primary-key probe per row (LATERAL ... LIMIT 1 cannot
--   be flattened into a hash join over the whole outbox);
-- * everything else reads the queue and the endpoints, both small by design.
-- Why the endpoints are locked in one statement and counted in the next: see 0003.
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
    fresh uuid[];
    locked uuid[];
BEGIN
    -- 1. Fan out up to p_fan_out events not yet fanned out: one delivery per endpoint whose
    -- patterns match and that existed when the event was created, due at once. Disabled
    -- endpoints get theirs too, held until enabled again; deleted ones get nothing. Serialised
    -- across relays by a try-lock (per-key order rests on it: see 0003).
    IF p_fan_out > 0 AND pg_try_advisory_xact_lock(1668247919, 0) THEN
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
        IF fresh IS NOT NULL THEN
            UPDATE courier.outbox AS o SET fanned_out_at = now() WHERE o.id = ANY (fresh);
            INSERT INTO courier.queue (event_id, endpoint_id, ordering_key)
            SELECT o.id, ep.id, o.ordering_key
            FROM courier.outbox AS o
            JOIN courier.endpoints AS ep
              ON ep.deleted_at IS NULL AND ep.created_at <= o.created_at
             AND o.event_type LIKE ANY (ep.like_patterns)
            WHERE o.id = ANY (fresh)
            -- Ids follow the events' order: the claim's key check relies on it.
            ORDER BY o.seq, ep.id;
        END IF;
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

-- Fresh statistics once, so that nothing starts from "taken on an empty table" (endpoints too:
-- the generated column rewrote it). No plan needs them.
ANALYZE courier.queue, courier.dead_letters, courier.delivery_history, courier.endpoints;
