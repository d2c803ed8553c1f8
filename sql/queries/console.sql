-- Queries only the operator console needs (charts, counts, bulk actions).
-- Named queries: each block starts with a line "-- name --"; the comment lines after it say
-- what it does. Loaded by pgcourier.db.load_queries() from every file in sql/queries/.

-- console_minutes --
-- Attempts per minute over the last $1 minutes by outcome, for endpoint $2 (NULL: every
-- endpoint). attempts has no index on started_at alone, so the whole-deployment chart walks
-- attempts_endpoint (endpoint_id, started_at) once per endpoint (deleted ones too: their rows
-- stay) instead of scanning the whole attempt log; an endpoint's own chart is one range scan.
SELECT date_trunc('minute', a.started_at) AS minute,
       count(*) FILTER (WHERE a.outcome = 'delivered') AS delivered,
       count(*) FILTER (WHERE a.outcome = 'retry') AS retried,
       count(*) FILTER (WHERE a.outcome = 'dead') AS dead
FROM courier.endpoints AS ep
CROSS JOIN LATERAL (
    SELECT x.started_at, x.outcome
    FROM courier.attempts AS x
    WHERE x.endpoint_id = ep.id
      AND x.started_at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
) AS a
WHERE $2::uuid IS NULL OR ep.id = $2
GROUP BY 1
ORDER BY 1;

-- console_relays --
-- Relays alive now (courier.relays is kept by their heartbeats), oldest first.
SELECT id, hostname, pid, started_at, seen_at, idle
FROM courier.relays
ORDER BY started_at, id;

-- console_endpoint_attempts --
-- Endpoint $1's attempts, newest first, after the cursor ($2 started_at, $3 id), $4 at most, with
-- the first $5 characters of each response body: a backward walk of attempts_endpoint. Whether
-- the attempt's event was a test send is one primary-key probe of the outbox per row shown.
SELECT id, delivery_id, event_id, attempt, started_at, duration_ms, status_code,
       left(response_body, $5) AS response_body, error, outcome,
       coalesce((SELECT o.test FROM courier.outbox AS o WHERE o.id = a.event_id), false) AS test
FROM courier.attempts AS a
WHERE endpoint_id = $1
  AND ($2::timestamptz IS NULL OR (started_at, id) < ($2, $3::bigint))
ORDER BY started_at DESC, id DESC
LIMIT $4;

-- console_count_dead --
-- How many dead letters match the filters of list_dead ($1 endpoint, $2 event type, $3 since,
-- $4 until, $5 the event's tenant, each NULL for any): what a bulk action's confirmation page
-- announces. The event's type and tenant are looked up only when filtered on, by correlated
-- subqueries: one primary-key probe per dead letter, whatever the statistics say, where a join
-- or an EXISTS may be planned as a scan of the whole outbox.
SELECT count(*)
FROM courier.dead_letters AS d
WHERE ($1::uuid IS NULL OR d.endpoint_id = $1)
  AND ($2::text IS NULL
       OR (SELECT o.event_type FROM courier.outbox AS o WHERE o.id = d.event_id) = $2)
  AND ($3::timestamptz IS NULL OR d.dead_at >= $3)
  AND ($4::timestamptz IS NULL OR d.dead_at < $4)
  AND ($5::text IS NULL
       OR (SELECT o.tenant FROM courier.outbox AS o WHERE o.id = d.event_id) = $5);

-- console_count_tenant_dead --
-- console_count_dead for the events of tenant $5 only: counts the tenant's rows of
-- dead_letters_tenant (0013), not every dead letter.
SELECT count(*)
FROM courier.dead_letters AS d
WHERE d.tenant = $5
  AND ($1::uuid IS NULL OR d.endpoint_id = $1)
  AND ($2::text IS NULL
       OR (SELECT o.event_type FROM courier.outbox AS o WHERE o.id = d.event_id) = $2)
  AND ($3::timestamptz IS NULL OR d.dead_at >= $3)
  AND ($4::timestamptz IS NULL OR d.dead_at < $4);
