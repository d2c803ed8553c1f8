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
-- Throw dead letter $1 away for good: it moves to the history as discarded. Returns its id if it
-- was dead.
WITH gone AS (
    DELETE FROM courier.dead_letters WHERE id = $1 RETURNING *
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
