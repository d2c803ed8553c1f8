-- Tenants (issue 13): per-tenant stats, and test sends to one endpoint.
-- Named queries: each block starts with a line "-- name --"; the comment lines after it say
-- what it does. Loaded by pgcourier.db.load_queries() from every file in sql/queries/.

-- tenant_stats --
-- Tenant $1 over the last $2 seconds, measured at its endpoints (those with that tenant, not
-- deleted): their attempts, successes and latency percentiles, their open deliveries and dead
-- letters; and the events enqueued for the tenant. Each endpoint's rows are read through its own
-- indexes (attempts_endpoint, queue_endpoint_due, dead_letters_endpoint), and the events through
-- outbox_tenant_created: the cost is the tenant's own rows, whatever the other tenants hold.
WITH eps AS (
    SELECT ep.id FROM courier.endpoints AS ep WHERE ep.tenant = $1 AND ep.deleted_at IS NULL
), recent AS (
    SELECT a.outcome, a.duration_ms
    FROM eps
    CROSS JOIN LATERAL (
        SELECT a.outcome, a.duration_ms FROM courier.attempts AS a
        WHERE a.endpoint_id = eps.id AND a.started_at >= now() - make_interval(secs => $2)
    ) AS a
)
SELECT
    (SELECT count(*) FROM eps) AS endpoints,
    (SELECT count(*) FROM recent) AS attempts,
    (SELECT count(*) FROM recent WHERE recent.outcome = 'delivered') AS delivered,
    (SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY recent.duration_ms)
     FROM recent) AS latency_ms,
    (SELECT count(*) FROM eps
     CROSS JOIN LATERAL (SELECT 1 FROM courier.queue AS q WHERE q.endpoint_id = eps.id) AS q)
        AS pending,
    (SELECT count(*) FROM eps
     CROSS JOIN LATERAL (
         SELECT 1 FROM courier.dead_letters AS d WHERE d.endpoint_id = eps.id) AS d) AS dead,
    (SELECT count(*) FROM courier.outbox AS o
     WHERE o.tenant = $1 AND o.created_at >= now() - make_interval(secs => $2)) AS events;

-- enqueue_test --
-- A test event of type $1 with payload $2 for endpoint $3 alone (direct targeting: the outbox
-- trigger checks the endpoint and gives the event its tenant), marked as a test. Only the admin
-- role writes this column; producers' grants do not cover it.
INSERT INTO courier.outbox (event_type, payload, endpoint_id, test)
VALUES ($1, $2::jsonb, $3, true)
RETURNING id;

-- event_type_example --
-- The catalog's example payload of type $1 (JSON text), NULL when unregistered or without one.
SELECT example::text FROM courier.event_types WHERE name = $1;

-- first_attempt --
-- The first attempt made for event $1, if any (attempts_event). The response body is cut to its
-- first 1,000 characters: enough to see what the receiver said.
SELECT id, endpoint_id, attempt, started_at, duration_ms, status_code,
       left(response_body, 1000) AS response_body, error, outcome
FROM courier.attempts
WHERE event_id = $1
ORDER BY id
LIMIT 1;
