-- Named queries. Each block starts with a line "-- name --"; the comment lines after it say
-- what it does. Loaded by pgcourier.db.load_queries(); a missing name fails at import.

-- claim_due --
-- Fan out up to $4 fresh events, then lease up to $1 due deliveries to relay $3 for $2 seconds
-- within every endpoint's policies: one round trip (see courier.claim in migrations 0003 for the
-- rules and why it is a function, and 0006 for the shape of its statements).
SELECT * FROM courier.claim($1, $2, $3, $4);

-- complete_deliveries --
-- Apply a batch of attempt outcomes: $1 ids, $2 new status, $3 retry delay in seconds (NULL when
-- not retrying), $4 HTTP status codes, $5 errors, $6 attempt start times, all for relay $7.
-- Only rows still leased to this relay change: if the lease was lost (the relay stalled and another
-- relay took the delivery over), the other relay's outcome wins. A finished delivery leaves the
-- queue for the history or the dead letters; a retry stays, due later. Returns the ids applied.
-- Every row is found by primary key (= ANY) and its values by array_position: no join with
-- unnest(), whose size the planner would have to guess (with missing statistics it chose a
-- nested loop that re-ran the unnest for every row).
WITH gone AS (
    DELETE FROM courier.queue AS q
    WHERE q.id = ANY ($1::bigint[]) AND q.lease_token = $7::uuid
      AND ($2::text[])[array_position($1::bigint[], q.id)] <> 'pending'
    RETURNING q.*, array_position($1::bigint[], q.id) AS i
), kept AS (
    UPDATE courier.queue AS q
    SET attempts = q.attempts + 1,
        due_at = now() + make_interval(secs => ($3::float8[])[array_position($1::bigint[], q.id)]),
        lease_token = NULL,
        last_attempt_at = ($6::timestamptz[])[array_position($1::bigint[], q.id)],
        last_status_code = ($4::int[])[array_position($1::bigint[], q.id)],
        last_error = ($5::text[])[array_position($1::bigint[], q.id)]
    WHERE q.id = ANY ($1::bigint[]) AND q.lease_token = $7::uuid
      AND ($2::text[])[array_position($1::bigint[], q.id)] = 'pending'
    RETURNING q.id
), delivered AS (
    INSERT INTO courier.delivery_history
        (id, event_id, endpoint_id, ordering_key, status, attempts, schedule_base,
         next_attempt_at, last_attempt_at, last_status_code, last_error, delivered_at,
         created_at)
    SELECT g.id, g.event_id, g.endpoint_id, g.ordering_key, 'delivered', g.attempts + 1,
           g.schedule_base, now(), ($6::timestamptz[])[g.i], ($4::int[])[g.i],
           ($5::text[])[g.i], now(), g.created_at
    FROM gone AS g WHERE ($2::text[])[g.i] = 'delivered'
), dead AS (
    INSERT INTO courier.dead_letters
        (id, event_id, endpoint_id, ordering_key, attempts, schedule_base, last_attempt_at,
         last_status_code, last_error, created_at)
    SELECT g.id, g.event_id, g.endpoint_id, g.ordering_key, g.attempts + 1, g.schedule_base,
           ($6::timestamptz[])[g.i], ($4::int[])[g.i], ($5::text[])[g.i], g.created_at
    FROM gone AS g WHERE ($2::text[])[g.i] = 'dead'
)
SELECT g.id FROM gone AS g UNION ALL SELECT k.id FROM kept AS k;

-- hold_key_followers --
-- A keyed delivery is waiting for a retry: its key's later deliveries at that endpoint cannot go
-- before it, so move them out of the claim's way until then. $1 endpoint ids, $2 keys, $3 the
-- retrying deliveries' ids, $4 their retry times.
UPDATE courier.queue AS q
SET due_at = greatest(q.due_at, r.until)
FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[])
    AS r(endpoint_id, ordering_key, head_id, until)
WHERE q.endpoint_id = r.endpoint_id AND q.ordering_key = r.ordering_key
  AND q.id > r.head_id AND q.lease_token IS NULL;

-- apply_endpoint_outcomes --
-- What a batch says about each endpoint: circuit, Retry-After pause, 410, continuous failure
-- (see courier.apply_endpoint_outcomes in migration 0003).
SELECT * FROM courier.apply_endpoint_outcomes($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- record_attempts --
-- Append a batch of attempts to the log, one array per column.
INSERT INTO courier.attempts
    (delivery_id, event_id, endpoint_id, attempt, started_at, duration_ms, status_code,
     response_body, error, outcome)
SELECT *
FROM unnest($1::bigint[], $2::uuid[], $3::uuid[], $4::int[], $5::timestamptz[], $6::float8[],
            $7::int[], $8::text[], $9::text[], $10::text[]);

-- renew_leases --
-- Push the lease of deliveries $1 held by relay $2 out to now() + $3 seconds. Returns the ids
-- still held; any id missing was taken over by another relay (or finished).
UPDATE courier.queue
SET due_at = now() + make_interval(secs => $3)
WHERE id = ANY($1::bigint[]) AND lease_token = $2
RETURNING id;

-- release_leases --
-- Hand deliveries $1 held by relay $2 back, due at once, for another relay (used on shutdown).
UPDATE courier.queue
SET due_at = now(), lease_token = NULL
WHERE id = ANY($1::bigint[]) AND lease_token = $2;

-- next_due --
-- When the next delivery becomes due at an endpoint that may take it (NULL if none): an endpoint
-- paused by Retry-After or with an open circuit counts from when it opens again. One probe of
-- queue_endpoint_due per enabled endpoint.
SELECT min(greatest(q.due_at, ep.paused_until,
                    CASE WHEN ep.circuit_state <> 'closed' THEN ep.circuit_until END))
FROM courier.endpoints AS ep
CROSS JOIN LATERAL (
    SELECT x.due_at
    FROM courier.queue AS x
    WHERE x.endpoint_id = ep.id
    ORDER BY x.due_at
    LIMIT 1
) AS q
WHERE ep.enabled;

-- register_relay --
-- Announce relay $1 (or refresh it after the UNLOGGED table was emptied by a crash restart).
INSERT INTO courier.relays (id, hostname, pid, idle)
VALUES ($1, $2, $3, false)
ON CONFLICT (id) DO UPDATE SET seen_at = now(), idle = false;

-- heartbeat_relay --
-- Refresh relay $1's liveness; returns nothing when the row is gone (then register again).
UPDATE courier.relays SET seen_at = now() WHERE id = $1 RETURNING id;

-- set_relay_idle --
-- Mark relay $1 (on host $3, process $4) as waiting ($2 = true) or working ($2 = false).
-- Producers read this flag. An upsert: after a crash restart emptied the UNLOGGED table, a plain
-- UPDATE matched nothing, and the relay slept believing producers would notify it.
INSERT INTO courier.relays AS r (id, hostname, pid, idle)
VALUES ($1, $3, $4, $2)
ON CONFLICT (id) DO UPDATE SET idle = excluded.idle, seen_at = now()
WHERE r.idle IS DISTINCT FROM excluded.idle;

-- reap_relays --
-- Forget relays not seen for $1 seconds (killed without a goodbye) so producers stop
-- notifying on their behalf.
DELETE FROM courier.relays WHERE seen_at < now() - make_interval(secs => $1);

-- queue_vacuum_due --
-- True when courier.queue holds over $1 dead row versions, no vacuum ran on it in the last $2
-- seconds and this role may vacuum it (its owner's): the relay's fallback for servers that run
-- without autovacuum (every delivery leaves one dead row in the queue; unvacuumed, the small hot
-- table would grow by every delivery made). A role that may not would only get a warning.
SELECT s.n_dead_tup > $1
       AND coalesce(greatest(s.last_vacuum, s.last_autovacuum)
                    < now() - make_interval(secs => $2), true)
       AND pg_has_role(c.relowner, 'MEMBER')
FROM pg_stat_user_tables AS s
JOIN pg_class AS c ON c.oid = s.relid
WHERE s.relid = 'courier.queue'::regclass;

-- vacuum_queue --
-- Outside a transaction (VACUUM cannot run in one); SKIP_LOCKED: never wait behind another.
VACUUM (SKIP_LOCKED) courier.queue;

-- deregister_relay --
DELETE FROM courier.relays WHERE id = $1;

-- wake_relays --
-- Wake every listening relay, e.g. after a replay made deliveries due.
SELECT pg_notify('courier_outbox', '');

-- set_max_payload_bytes --
UPDATE courier.config SET max_payload_bytes = $1;

-- enqueue --
SELECT courier.enqueue($1, $2::jsonb, $3, $4) AS id;

-- create_endpoint --
INSERT INTO courier.endpoints
    (url, event_types, secret, description, enabled, timeout_seconds, headers, signature_scheme,
     permanent_statuses, max_in_flight, rate_limit, kind, slack_channel, slack_token, template)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12, $13, $14, $15)
RETURNING id;

-- manage_default_slack --
-- The endpoint pgcourier keeps for PGCOURIER_SLACK_BOT_TOKEN: request_submitted to channel $3
-- (posting to $1), secret $2 unused. Created once, its channel and URL kept in step with the
-- settings; an operator's other changes (patterns, limits, template) are kept.
INSERT INTO courier.endpoints
    (url, event_types, secret, description, kind, slack_channel, managed)
VALUES ($1, ARRAY['request_submitted'], $2,
        'Slack: the default channel (PGCOURIER_SLACK_DEFAULT_CHANNEL), managed by pgcourier',
        'slack', $3, true)
ON CONFLICT (managed) WHERE managed AND deleted_at IS NULL DO UPDATE
SET slack_channel = EXCLUDED.slack_channel, url = EXCLUDED.url, updated_at = now()
WHERE courier.endpoints.slack_channel IS DISTINCT FROM EXCLUDED.slack_channel
   OR courier.endpoints.url IS DISTINCT FROM EXCLUDED.url;

-- disable_default_slack --
-- Without a bot token the managed Slack endpoint cannot deliver: hold its deliveries.
UPDATE courier.endpoints
SET enabled = false, disabled_reason = 'PGCOURIER_SLACK_BOT_TOKEN is not set', disabled_at = now()
WHERE managed AND deleted_at IS NULL AND enabled;

-- list_endpoints --
-- Endpoints not deleted, oldest first (the view leaves secrets out).
SELECT * FROM courier.endpoint_public ORDER BY created_at, id;

-- lock_endpoint --
-- Lock endpoint $1 (not deleted) until the end of the transaction, for a read-modify-write.
SELECT id FROM courier.endpoints WHERE id = $1 AND deleted_at IS NULL FOR UPDATE;

-- update_endpoint --
-- Write every settable field of endpoint $1 (the caller merged the change into the current row).
-- Disabling records why ($6). Enabling clears the reason and the failure history, so that an
-- endpoint disabled for failing continuously gets a fresh start.
UPDATE courier.endpoints
SET url = $2, event_types = $3, description = $4, enabled = $5,
    disabled_reason = CASE WHEN $5 THEN NULL WHEN enabled THEN $6 ELSE disabled_reason END,
    disabled_at = CASE WHEN $5 THEN NULL WHEN enabled THEN now() ELSE disabled_at END,
    failing_since = CASE WHEN $5 AND NOT enabled THEN NULL ELSE failing_since END,
    consecutive_failures = CASE WHEN $5 AND NOT enabled THEN 0 ELSE consecutive_failures END,
    circuit_state = CASE WHEN $5 AND NOT enabled THEN 'closed' ELSE circuit_state END,
    timeout_seconds = $7, headers = $8::jsonb, signature_scheme = $9, permanent_statuses = $10,
    max_in_flight = $11, rate_limit = $12, slack_channel = $13, template = $14,
    slack_token = coalesce($15, slack_token), updated_at = now()
WHERE id = $1 AND deleted_at IS NULL;

-- rotate_secret --
-- Make $2 endpoint $1's secret; the current one keeps signing beside it for $3 seconds (a grace
-- period of 0 drops it at once). A rotation during a grace period drops the oldest secret.
UPDATE courier.endpoints
SET previous_secret = CASE WHEN $3 > 0 THEN secret END,
    previous_secret_expires_at = CASE WHEN $3 > 0 THEN now() + make_interval(secs => $3) END,
    secret = $2, updated_at = now()
WHERE id = $1 AND deleted_at IS NULL
RETURNING id;

-- delete_endpoint --
-- Delete endpoint $1 softly: it stops receiving at once, its secrets are forgotten (overwritten
-- with a fresh random one no-one knows), and attempts keep a row that says where they went.
UPDATE courier.endpoints
SET deleted_at = now(), enabled = false, disabled_reason = 'deleted', secret = $2,
    previous_secret = NULL, previous_secret_expires_at = NULL, updated_at = now()
WHERE id = $1 AND deleted_at IS NULL
RETURNING id;

-- discard_endpoint_deliveries --
-- Discard the queued and dead deliveries of deleted endpoint $1 (reason recorded): they move to
-- the history as discarded. Leased ones are discarded too: the relay's completion is fenced by
-- the lease token and finds nothing. The command tag counts them.
WITH queued AS (
    DELETE FROM courier.queue WHERE endpoint_id = $1 RETURNING *
), dead AS (
    DELETE FROM courier.dead_letters WHERE endpoint_id = $1 RETURNING *
)
INSERT INTO courier.delivery_history
    (id, event_id, endpoint_id, ordering_key, status, attempts, schedule_base, last_attempt_at,
     last_status_code, last_error, dead_at, discarded_at, created_at)
SELECT id, event_id, endpoint_id, ordering_key, 'discarded', attempts, schedule_base,
       last_attempt_at, last_status_code,
       coalesce(last_error || '; ', '') || 'discarded: endpoint deleted', NULL, now(), created_at
FROM queued
UNION ALL
SELECT id, event_id, endpoint_id, ordering_key, 'discarded', attempts, schedule_base,
       last_attempt_at, last_status_code,
       coalesce(last_error || '; ', '') || 'discarded: endpoint deleted', dead_at, now(),
       created_at
FROM dead;

-- sweep_deleted_endpoints --
-- Discard deliveries that a fan-out created for an endpoint in the instant it was deleted (the
-- fan-out's snapshot still saw it). Run by relays' housekeeping; only endpoints deleted in the
-- last hour are looked at, through queue_endpoint_due, so the sweep stays cheap.
WITH gone AS (
    DELETE FROM courier.queue AS q
    USING courier.endpoints AS ep
    WHERE ep.deleted_at > now() - interval '1 hour' AND q.endpoint_id = ep.id
    RETURNING q.*
)
INSERT INTO courier.delivery_history
    (id, event_id, endpoint_id, ordering_key, status, attempts, schedule_base, last_attempt_at,
     last_status_code, last_error, discarded_at, created_at)
SELECT id, event_id, endpoint_id, ordering_key, 'discarded', attempts, schedule_base,
       last_attempt_at, last_status_code, 'discarded: endpoint deleted', now(), created_at
FROM gone;

-- endpoint_stats --
-- Endpoint $1 over the last $2 seconds: attempts, successes, latency percentiles, the open
-- deliveries and the latest failure.
SELECT
    (SELECT count(*) FROM courier.attempts AS a
     WHERE a.endpoint_id = $1 AND a.started_at >= now() - make_interval(secs => $2)) AS attempts,
    (SELECT count(*) FROM courier.attempts AS a
     WHERE a.endpoint_id = $1 AND a.started_at >= now() - make_interval(secs => $2)
       AND a.outcome = 'delivered') AS delivered,
    (SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY a.duration_ms)
     FROM courier.attempts AS a
     WHERE a.endpoint_id = $1 AND a.started_at >= now() - make_interval(secs => $2))
        AS latency_ms,
    (SELECT count(*) FROM courier.queue AS q WHERE q.endpoint_id = $1) AS pending,
    (SELECT count(*) FROM courier.dead_letters AS d WHERE d.endpoint_id = $1) AS dead;

-- endpoint_last_failure --
-- The latest failed attempt of endpoint $1 (walks attempts_endpoint backwards).
SELECT a.started_at, a.status_code, a.error, a.event_id
FROM courier.attempts AS a
WHERE a.endpoint_id = $1 AND a.outcome <> 'delivered'
ORDER BY a.started_at DESC
LIMIT 1;

-- recoverable_deliveries --
-- Endpoint $1's failed deliveries since $2: dead ones, and ones waiting for a retry (leased ones
-- are in flight and left alone). Only their ids: recover_deliveries changes them in batches.
SELECT d.id FROM courier.dead_letters AS d WHERE d.endpoint_id = $1 AND d.dead_at >= $2
UNION ALL
SELECT q.id FROM courier.queue AS q
WHERE q.endpoint_id = $1 AND q.lease_token IS NULL AND q.attempts > q.schedule_base
  AND q.last_attempt_at >= $2
ORDER BY id;

-- recover_deliveries --
-- Re-queue deliveries $1 of endpoint $2 that still match recoverable_deliveries (since $3): dead
-- ones go back to the queue with a fresh retry schedule, ones waiting for a retry become due
-- now. Rows that changed since they were listed (delivered, leased, already recovered) are left
-- alone. Returns the ids.
WITH revived AS (
    DELETE FROM courier.dead_letters AS d
    WHERE d.id = ANY($1::bigint[]) AND d.endpoint_id = $2 AND d.dead_at >= $3
    RETURNING d.*
), requeued AS (
    INSERT INTO courier.queue
        (id, event_id, endpoint_id, ordering_key, attempts, schedule_base, due_at,
         last_attempt_at, last_status_code, last_error, created_at)
    SELECT id, event_id, endpoint_id, ordering_key, attempts, attempts, now(), last_attempt_at,
           last_status_code, last_error, created_at
    FROM revived
    RETURNING id
), hurried AS (
    UPDATE courier.queue AS q
    SET due_at = now()
    WHERE q.id = ANY($1::bigint[]) AND q.endpoint_id = $2 AND q.lease_token IS NULL
      AND q.attempts > q.schedule_base AND q.last_attempt_at >= $3
    RETURNING q.id
)
SELECT id FROM requeued UNION ALL SELECT id FROM hurried;

-- list_dead --
-- Dead letters, newest first: endpoint $1, event type $2, dead at or after $3 and before $4 (each
-- NULL for any), after the cursor ($5 dead_at, $6 id), $7 at most. Walks dead_letters_dead_at
-- (or dead_letters_endpoint); each row's event is one primary-key probe of the outbox.
SELECT d.id, d.event_id, o.event_type, d.endpoint_id, ep.url, d.attempts, d.last_attempt_at,
       d.last_status_code, d.last_error, d.dead_at
FROM courier.dead_letters AS d
CROSS JOIN LATERAL (
    SELECT o.event_type FROM courier.outbox AS o WHERE o.id = d.event_id LIMIT 1
) AS o
LEFT JOIN courier.endpoints AS ep ON ep.id = d.endpoint_id
WHERE ($1::uuid IS NULL OR d.endpoint_id = $1)
  AND ($2::text IS NULL OR o.event_type = $2)
  AND ($3::timestamptz IS NULL OR d.dead_at >= $3)
  AND ($4::timestamptz IS NULL OR d.dead_at < $4)
  AND ($5::timestamptz IS NULL OR (d.dead_at, d.id) < ($5, $6::bigint))
ORDER BY d.dead_at DESC, d.id DESC
LIMIT $7;

-- get_dead --
-- One dead letter with its event.
SELECT d.id, d.event_id, o.event_type, o.payload::text AS payload, d.endpoint_id, ep.url,
       d.attempts, d.last_attempt_at, d.last_status_code, d.last_error, d.dead_at
FROM courier.dead_letters AS d
CROSS JOIN LATERAL (
    SELECT o.event_type, o.payload FROM courier.outbox AS o WHERE o.id = d.event_id LIMIT 1
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
-- after $3 and before $4, each NULL for any. replay_dead then queues them in batches.
SELECT d.id
FROM courier.dead_letters AS d
CROSS JOIN LATERAL (
    SELECT o.event_type FROM courier.outbox AS o WHERE o.id = d.event_id LIMIT 1
) AS o
WHERE ($1::uuid IS NULL OR d.endpoint_id = $1)
  AND ($2::text IS NULL OR o.event_type = $2)
  AND ($3::timestamptz IS NULL OR d.dead_at >= $3)
  AND ($4::timestamptz IS NULL OR d.dead_at < $4)
ORDER BY d.id;

-- bootstrap_migrations --
-- Run by the migrator under its advisory lock, before reading which migrations are applied.
CREATE SCHEMA IF NOT EXISTS courier;
CREATE TABLE IF NOT EXISTS courier.migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- revoke_public_execute --
-- Run at the end of every migrate(): a function is executable by PUBLIC when created, and no
-- default privilege can change that per schema, so each new one is closed here
-- (producers get EXECUTE on courier.enqueue by an explicit GRANT: README, least privilege).
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA courier FROM PUBLIC;

-- record_migration --
INSERT INTO courier.migrations (version, name, checksum) VALUES ($1, $2, $3);

-- delivery_gauges --
-- One cheap query per scrape, whatever the history: counts of the queue and the dead letters
-- (tables of the work in progress); the oldest pending event is the first unfanned one
-- (outbox_pending, in seq order) or the event of the oldest queued delivery (ids follow the
-- events' order), whichever is older: each a probe, never a min() over the outbox.
SELECT
    (SELECT count(*) FROM courier.queue) AS pending,
    (SELECT count(*) FROM courier.dead_letters) AS dead,
    (SELECT count(*) FROM courier.endpoints
     WHERE circuit_state <> 'closed' AND deleted_at IS NULL) AS open_circuits,
    extract(epoch FROM now() - least(
        (SELECT o.created_at FROM courier.outbox AS o
         WHERE o.fanned_out_at IS NULL ORDER BY o.seq LIMIT 1),
        (SELECT o.created_at
         FROM (SELECT q.event_id FROM courier.queue AS q ORDER BY q.id LIMIT 1) AS q
         CROSS JOIN LATERAL (
             SELECT o.created_at FROM courier.outbox AS o WHERE o.id = q.event_id LIMIT 1
         ) AS o)
    ))::float8 AS oldest_pending_age;

-- get_endpoint --
SELECT * FROM courier.endpoint_public WHERE id = $1;

-- list_events --
-- Newest first, filtered by type ($1), created at or after $2 and before $3, keyset-paginated
-- after the cursor ($4 created_at, $5 id): the page walks outbox_created, never an OFFSET.
SELECT id, event_type, payload::text AS payload, ordering_key, created_at, fanned_out_at
FROM courier.outbox
WHERE ($1::text IS NULL OR event_type = $1)
  AND ($2::timestamptz IS NULL OR created_at >= $2)
  AND ($3::timestamptz IS NULL OR created_at < $3)
  AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $6;

-- get_event --
SELECT id, event_type, payload::text AS payload, ordering_key, created_at, fanned_out_at
FROM courier.outbox
WHERE id = $1;

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
-- the first $5 characters of each response body: a backward walk of attempts_endpoint.
SELECT id, delivery_id, event_id, attempt, started_at, duration_ms, status_code,
       left(response_body, $5) AS response_body, error, outcome
FROM courier.attempts
WHERE endpoint_id = $1
  AND ($2::timestamptz IS NULL OR (started_at, id) < ($2, $3::bigint))
ORDER BY started_at DESC, id DESC
LIMIT $4;

-- console_count_dead --
-- How many dead letters match the filters of list_dead ($1 endpoint, $2 event type, $3 since,
-- $4 until, each NULL for any): what a bulk action's confirmation page announces. The event's
-- type is looked up only when filtered on, by a correlated subquery: one primary-key probe per
-- dead letter, whatever the statistics say, where a join or an EXISTS may be planned as a scan
-- of the whole outbox.
SELECT count(*)
FROM courier.dead_letters AS d
WHERE ($1::uuid IS NULL OR d.endpoint_id = $1)
  AND ($2::text IS NULL
       OR (SELECT o.event_type FROM courier.outbox AS o WHERE o.id = d.event_id) = $2)
  AND ($3::timestamptz IS NULL OR d.dead_at >= $3)
  AND ($4::timestamptz IS NULL OR d.dead_at < $4);

-- console_discard_dead --
-- Throw dead letters $1 away for good: they move to the history as discarded (see discard_dead);
-- only rows still dead move. Returns the ids discarded.
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

-- console_discard_matching_dead --
-- Throw away every dead letter matching the filters of list_dead ($1..$4, each NULL for any; the
-- type looked up as in console_count_dead), as console_discard_dead does. Returns the ids.
WITH gone AS (
    DELETE FROM courier.dead_letters AS d
    WHERE ($1::uuid IS NULL OR d.endpoint_id = $1)
      AND ($2::text IS NULL
           OR (SELECT o.event_type FROM courier.outbox AS o WHERE o.id = d.event_id) = $2)
      AND ($3::timestamptz IS NULL OR d.dead_at >= $3)
      AND ($4::timestamptz IS NULL OR d.dead_at < $4)
    RETURNING *
)
INSERT INTO courier.delivery_history
    (id, event_id, endpoint_id, ordering_key, status, attempts, schedule_base, last_attempt_at,
     last_status_code, last_error, dead_at, discarded_at, created_at)
SELECT id, event_id, endpoint_id, ordering_key, 'discarded', attempts, schedule_base,
       last_attempt_at, last_status_code, last_error, dead_at, now(), created_at
FROM gone
RETURNING id;
