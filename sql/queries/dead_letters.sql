-- Dead letters: list, show, replay, discard.
-- Named queries: each block starts with a line "-- name --"; the comment lines after it say
-- what it does. Loaded by pgcourier.db.load_queries() from every file in sql/queries/.

-- list_dead --
-- Dead letters, newest first: endpoint $1, event type $2, dead at or after $3 and before $4, the
-- event's tenant $8 (each NULL for any), after the cursor ($5 dead_at, $6 id), $7 at most. Walks dead_letters_dead_at
-- (or dead_letters_endpoint); each row's event is one primary-key probe of the outbox.
SELECT d.id, d.event_id, o.event_type, d.endpoint_id, ep.url, d.attempts, d.last_attempt_at,
       d.last_status_code, d.last_error, d.dead_at, o.tenant
FROM courier.dead_letters AS d
CROSS JOIN LATERAL (
    SELECT o.event_type, o.tenant FROM courier.outbox AS o WHERE o.id = d.event_id LIMIT 1
) AS o
LEFT JOIN courier.endpoints AS ep ON ep.id = d.endpoint_id
WHERE ($1::uuid IS NULL OR d.endpoint_id = $1)
  AND ($2::text IS NULL OR o.event_type = $2)
  AND ($3::timestamptz IS NULL OR d.dead_at >= $3)
  AND ($4::timestamptz IS NULL OR d.dead_at < $4)
  AND ($5::timestamptz IS NULL OR (d.dead_at, d.id) < ($5, $6::bigint))
  AND ($8::text IS NULL OR o.tenant = $8)
ORDER BY d.dead_at DESC, d.id DESC
LIMIT $7;

-- get_dead --
-- One dead letter with its event.
SELECT d.id, d.event_id, o.event_type, o.payload::text AS payload, d.endpoint_id, ep.url,
       d.attempts, d.last_attempt_at, d.last_status_code, d.last_error, d.dead_at, o.tenant
FROM courier.dead_letters AS d
CROSS JOIN LATERAL (
    SELECT o.event_type, o.payload, o.tenant FROM courier.outbox AS o WHERE o.id = d.event_id
    LIMIT 1
) AS o
LEFT JOIN courier.endpoints AS ep ON ep.id = d.endpoint_id
WHERE d.id = $1;

-- discard_dead --
-- Throw dead letters $1 away for good: they move to the history as discarded. Only rows still
-- dead move, so discarding twice records once. Returns the ids discarded. (The one discard of
-- the API, the CLI and the console: one id, a selection, or a filter's ids in batches.)
WITH gone AS (
    DELETE FROM courier.dead_letters WHERE id = ANY($1::bigint[]) RETURNING *
)
INSERT INTO courier.delivery_history
    (id, event_id, endpoint_id, ordering_key, status, attempts, schedule_base, last_attempt_at,
     last_status_code, last_error, dead_at, discarded_at, created_at)
SELECT id, event_id, endpoint_id, ordering_key, 'discarded', attempts, schedule_base,
       last_attempt_at, last_status_code, last_error, dead_at, now(), created_at
FROM gone
RETURNING id;

-- replay_dead --
-- Put dead deliveries $1 back in the queue, due now, with a fresh retry schedule; each keeps its
-- id (key order, webhook-id). Only rows still dead move, so replaying twice queues once. Returns
-- the ids queued.
WITH revived AS (
    DELETE FROM courier.dead_letters WHERE id = ANY($1::bigint[]) RETURNING *
)
INSERT INTO courier.queue
    (id, event_id, endpoint_id, ordering_key, attempts, schedule_base, due_at, last_attempt_at,
     last_status_code, last_error, created_at)
SELECT id, event_id, endpoint_id, ordering_key, attempts, attempts, now(), last_attempt_at,
       last_status_code, last_error, created_at
FROM revived
RETURNING id;

-- matching_dead_ids --
-- The ids of every dead delivery matching the filters: endpoint $1, event type $2, dead at or
-- after $3 and before $4, the event's tenant $5, each NULL for any. replay_dead then queues them
-- in batches.
SELECT d.id
FROM courier.dead_letters AS d
CROSS JOIN LATERAL (
    SELECT o.event_type, o.tenant FROM courier.outbox AS o WHERE o.id = d.event_id LIMIT 1
) AS o
WHERE ($1::uuid IS NULL OR d.endpoint_id = $1)
  AND ($2::text IS NULL OR o.event_type = $2)
  AND ($3::timestamptz IS NULL OR d.dead_at >= $3)
  AND ($4::timestamptz IS NULL OR d.dead_at < $4)
  AND ($5::text IS NULL OR o.tenant = $5)
ORDER BY d.id;

-- list_tenant_dead --
-- list_dead for the events of tenant $8 only: the same filters ($1 endpoint, $2 event type, $3
-- since, $4 until, each NULL for any) and cursor ($5 dead_at, $6 id), $7 rows at most. A page
-- costs its own rows, never the other tenants', whatever the statistics and whether the plan is
-- custom or generic:
-- * the walk steps through dead_letters_tenant (0013) one row at a time, newest first: each
--   step is "the index entry before this one", a row comparison over all three columns ordered
--   as the index is, LIMIT 1. No other index has that order, so the step's one plan is one
--   descent of this index. (The plain "tenant = $8 ORDER BY dead_at DESC, id DESC LIMIT n" was
--   planned, generic and without statistics, as a bitmap scan of all the tenant's rows sorted
--   afterwards with an outbox probe each, the "$n IS NULL OR ..." filters making every estimate
--   tiny: 2M pages for a tenant of 450,000 dead letters. With stale statistics a plan may walk
--   dead_letters_dead_at instead, through every tenant's rows.)
-- * the walk starts below the cursor and until, and ends at the tenant's oldest row or at
--   since; the endpoint and the event type filter the walked rows;
-- * the rows come out in the walk's order: the outer query only filters them and adds the event
--   (a LATERAL probe with LIMIT, which stays a nested loop over the walk) and the URL (a scalar
--   subquery), so no sort of the walk is needed or planned, and the LIMIT stops the walk.
WITH RECURSIVE walk AS (
    (SELECT d.tenant, d.dead_at, d.id
     FROM courier.dead_letters AS d
     WHERE d.tenant IS NOT NULL
       AND (d.tenant, d.dead_at, d.id) < (
               $8::text,
               least(coalesce($5::timestamptz, 'infinity'), coalesce($4::timestamptz, 'infinity')),
               CASE WHEN coalesce($4::timestamptz, 'infinity') <= coalesce($5::timestamptz, 'infinity')
                    THEN -1
                    ELSE coalesce($6::bigint, 9223372036854775807) END)
     ORDER BY d.tenant DESC, d.dead_at DESC, d.id DESC
     LIMIT 1)
    UNION ALL
    SELECT n.tenant, n.dead_at, n.id
    FROM walk AS w
    CROSS JOIN LATERAL (
        SELECT d.tenant, d.dead_at, d.id
        FROM courier.dead_letters AS d
        WHERE d.tenant IS NOT NULL AND (d.tenant, d.dead_at, d.id) < (w.tenant, w.dead_at, w.id)
        ORDER BY d.tenant DESC, d.dead_at DESC, d.id DESC
        LIMIT 1
    ) AS n
    -- (Checked on the step's one row, after its LIMIT.)
    WHERE n.tenant = $8 AND n.dead_at >= coalesce($3::timestamptz, '-infinity')
)
SELECT d.id, d.event_id, o.event_type, d.endpoint_id,
       (SELECT ep.url FROM courier.endpoints AS ep WHERE ep.id = d.endpoint_id) AS url,
       d.attempts, d.last_attempt_at, d.last_status_code, d.last_error, d.dead_at, d.tenant
FROM walk AS w
CROSS JOIN LATERAL (
    SELECT d.id, d.event_id, d.endpoint_id, d.attempts, d.last_attempt_at, d.last_status_code,
           d.last_error, d.dead_at, d.tenant
    FROM courier.dead_letters AS d WHERE d.id = w.id LIMIT 1
) AS d
CROSS JOIN LATERAL (
    SELECT o.event_type FROM courier.outbox AS o WHERE o.id = d.event_id LIMIT 1
) AS o
-- (The first step is checked here: it may be another tenant's, or older than since.)
WHERE w.tenant = $8 AND w.dead_at >= coalesce($3::timestamptz, '-infinity')
  AND ($1::uuid IS NULL OR d.endpoint_id = $1)
  AND ($2::text IS NULL OR o.event_type = $2)
LIMIT $7;

-- matching_tenant_dead_ids --
-- matching_dead_ids for the events of tenant $5 only (dead_letters_tenant: the tenant's rows).
SELECT d.id
FROM courier.dead_letters AS d
WHERE d.tenant = $5
  AND ($1::uuid IS NULL OR d.endpoint_id = $1)
  AND ($2::text IS NULL
       OR (SELECT o.event_type FROM courier.outbox AS o WHERE o.id = d.event_id) = $2)
  AND ($3::timestamptz IS NULL OR d.dead_at >= $3)
  AND ($4::timestamptz IS NULL OR d.dead_at < $4)
ORDER BY d.id;
