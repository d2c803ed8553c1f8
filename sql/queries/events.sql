-- Producing and reading events.
-- Named queries: each block starts with a line "-- name --"; the comment lines after it say
-- what it does. Loaded by pgcourier.db.load_queries() from every file in sql/queries/.

-- enqueue --
-- Positional: event type, payload, ordering key, idempotency key, tenant, target endpoint.
SELECT courier.enqueue($1, $2::jsonb, $3, $4, $5, $6) AS id;

-- list_events --
-- Newest first, filtered by type ($1), created at or after $2 and before $3, keyset-paginated
-- after the cursor ($4 created_at, $5 id): the page walks outbox_created, never an OFFSET.
SELECT id, event_type, payload::text AS payload, ordering_key, created_at, fanned_out_at,
       tenant, endpoint_id, test
FROM courier.outbox
WHERE ($1::text IS NULL OR event_type = $1)
  AND ($2::timestamptz IS NULL OR created_at >= $2)
  AND ($3::timestamptz IS NULL OR created_at < $3)
  AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $6;

-- get_event --
SELECT id, event_type, payload::text AS payload, ordering_key, created_at, fanned_out_at,
       tenant, endpoint_id, test
FROM courier.outbox
WHERE id = $1;

-- list_tenant_events --
-- list_events for tenant $7 only: the same filters ($1 type, $2 since, $3 until) and cursor ($4
-- created_at, $5 id), $6 rows at most. A page costs the tenant's own events, whatever the
-- statistics and whether the plan is custom or generic. The walk steps through
-- outbox_tenant_created one event at a time, newest first; see list_tenant_dead for why it is
-- written so (the plain ORDER BY ... LIMIT was planned, generic without statistics, as a bitmap
-- scan of all the tenant's events sorted afterwards, and with stale statistics as a walk of
-- every tenant's events by outbox_created). It carries only the keys; each event is then read
-- by primary key (a LATERAL probe with LIMIT: a nested loop over the walk, in its order).
WITH RECURSIVE walk AS (
    (SELECT o.tenant, o.created_at, o.id
     FROM courier.outbox AS o
     WHERE o.tenant IS NOT NULL
       AND (o.tenant, o.created_at, o.id) < (
               $7::text,
               least(coalesce($4::timestamptz, 'infinity'), coalesce($3::timestamptz, 'infinity')),
               CASE WHEN coalesce($3::timestamptz, 'infinity') <= coalesce($4::timestamptz, 'infinity')
                    THEN '00000000-0000-0000-0000-000000000000'::uuid
                    ELSE coalesce($5::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff') END)
     ORDER BY o.tenant DESC, o.created_at DESC, o.id DESC
     LIMIT 1)
    UNION ALL
    SELECT n.tenant, n.created_at, n.id
    FROM walk AS w
    CROSS JOIN LATERAL (
        SELECT o.tenant, o.created_at, o.id
        FROM courier.outbox AS o
        WHERE o.tenant IS NOT NULL AND (o.tenant, o.created_at, o.id) < (w.tenant, w.created_at, w.id)
        ORDER BY o.tenant DESC, o.created_at DESC, o.id DESC
        LIMIT 1
    ) AS n
    -- (Checked on the step's one row, after its LIMIT: the walk ends at the tenant's oldest
    -- event, or at since.)
    WHERE n.tenant = $7 AND n.created_at >= coalesce($2::timestamptz, '-infinity')
)
SELECT e.id, e.event_type, e.payload::text AS payload, e.ordering_key, e.created_at,
       e.fanned_out_at, e.tenant, e.endpoint_id, e.test
FROM walk AS w
CROSS JOIN LATERAL (
    SELECT o.id, o.event_type, o.payload, o.ordering_key, o.created_at, o.fanned_out_at,
           o.tenant, o.endpoint_id, o.test
    FROM courier.outbox AS o WHERE o.id = w.id LIMIT 1
) AS e
-- (The first step is checked here: it may be another tenant's, or older than since.)
WHERE w.tenant = $7 AND w.created_at >= coalesce($2::timestamptz, '-infinity')
  AND ($1::text IS NULL OR e.event_type = $1)
LIMIT $6;

-- event_deliveries --
-- Where one event stands with each endpoint it was fanned out to: its rows in the queue, the
-- dead letters and the history, each found by (event_id, endpoint_id).
SELECT d.id, d.endpoint_id, d.status, d.attempts, d.next_attempt_at, d.last_attempt_at,
       d.last_status_code, d.last_error, d.delivered_at, d.dead_at
FROM (
    -- due_at is a lease time while in flight; it is meaningless once finished
    SELECT q.id, q.endpoint_id, 'pending' AS status, q.attempts, q.due_at AS next_attempt_at,
           q.last_attempt_at, q.last_status_code, q.last_error,
           NULL::timestamptz AS delivered_at, NULL::timestamptz AS dead_at
    FROM courier.queue AS q WHERE q.event_id = $1
    UNION ALL
    SELECT x.id, x.endpoint_id, 'dead', x.attempts, NULL, x.last_attempt_at,
           x.last_status_code, x.last_error, NULL, x.dead_at
    FROM courier.dead_letters AS x WHERE x.event_id = $1
    UNION ALL
    SELECT h.id, h.endpoint_id, h.status, h.attempts, NULL, h.last_attempt_at,
           h.last_status_code, h.last_error, h.delivered_at, h.dead_at
    FROM courier.delivery_history AS h WHERE h.event_id = $1
) AS d
ORDER BY d.id;

-- event_attempts --
-- Attempts made for event $1, oldest first, after attempt id $2 (NULL: from the first), $3 at
-- most. Walks attempts_event.
SELECT id, delivery_id, endpoint_id, attempt, started_at, duration_ms, status_code,
       response_body, error, outcome
FROM courier.attempts
WHERE event_id = $1 AND ($2::bigint IS NULL OR id > $2)
ORDER BY id
LIMIT $3;

-- Console (issue 14) --
