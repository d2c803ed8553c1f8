-- Named queries. Each block starts with a line "-- name --"; the comment lines after it say
-- what it does. Loaded by pgcourier.db.load_queries(); a missing name fails at import.

-- fan_out --
-- Claim up to $1 events not yet fanned out, create one delivery per enabled endpoint whose
-- patterns match, and return those deliveries already leased to relay $3 for $2 seconds, so the
-- relay can send them at once without a second claim.
-- SKIP LOCKED lets several relays fan out side by side; the whole statement is one transaction,
-- so a relay that dies here leaves the events untouched for another relay.
WITH events AS (
    SELECT o.id, o.event_type, o.payload, o.created_at
    FROM courier.outbox AS o
    WHERE o.fanned_out_at IS NULL
    ORDER BY o.seq
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE courier.outbox AS o
    SET fanned_out_at = now()
    FROM events AS e
    WHERE o.id = e.id
), created AS (
    INSERT INTO courier.deliveries (event_id, endpoint_id, next_attempt_at, lease_token)
    SELECT e.id, ep.id, now() + make_interval(secs => $2), $3
    FROM events AS e
    JOIN courier.endpoints AS ep
      ON ep.enabled AND courier.event_type_matches(ep.event_types, e.event_type)
    RETURNING id, event_id, endpoint_id, attempts, schedule_base
)
SELECT c.id, c.event_id, c.endpoint_id, c.attempts, c.schedule_base,
       e.event_type, e.payload::text AS payload, e.created_at, ep.url, ep.timeout_seconds,
       ep.headers::text AS headers,
       -- during a rotation's grace period the previous secret signs too
       CASE WHEN ep.previous_secret_expires_at > now() THEN ARRAY[ep.secret, ep.previous_secret]
            ELSE ARRAY[ep.secret] END AS secrets
FROM created AS c
JOIN events AS e ON e.id = c.event_id
JOIN courier.endpoints AS ep ON ep.id = c.endpoint_id;

-- claim_due --
-- Lease up to $1 pending deliveries that are due (a retry whose time has come, a replay, or a
-- delivery whose previous lease ran out) to relay $3 for $2 seconds.
-- The inner SELECT walks the partial index deliveries_due in time order; deliveries of disabled
-- endpoints are passed over and stay pending until the endpoint is enabled again.
WITH due AS (
    SELECT d.id
    FROM courier.deliveries AS d
    WHERE d.status = 'pending'
      AND d.next_attempt_at <= now()
      AND EXISTS (SELECT 1 FROM courier.endpoints AS ep WHERE ep.id = d.endpoint_id AND ep.enabled)
    ORDER BY d.next_attempt_at
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
), leased AS (
    UPDATE courier.deliveries AS d
    SET next_attempt_at = now() + make_interval(secs => $2), lease_token = $3
    FROM due
    WHERE d.id = due.id
    RETURNING d.id, d.event_id, d.endpoint_id, d.attempts, d.schedule_base
)
SELECT l.id, l.event_id, l.endpoint_id, l.attempts, l.schedule_base,
       o.event_type, o.payload::text AS payload, o.created_at, ep.url, ep.timeout_seconds,
       ep.headers::text AS headers,
       CASE WHEN ep.previous_secret_expires_at > now() THEN ARRAY[ep.secret, ep.previous_secret]
            ELSE ARRAY[ep.secret] END AS secrets
FROM leased AS l
JOIN courier.outbox AS o ON o.id = l.event_id
JOIN courier.endpoints AS ep ON ep.id = l.endpoint_id;

-- complete_deliveries --
-- Apply a batch of attempt outcomes: $1 ids, $2 new status, $3 retry delay in seconds (NULL when
-- not retrying), $4 HTTP status codes, $5 errors, $6 attempt start times, all for relay $7.
-- Only rows still leased to this relay change: if the lease was lost (the relay stalled and another
-- relay took the delivery over), the other relay's outcome wins. Returns the ids applied.
WITH r AS (
    SELECT *
    FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::int[], $5::text[], $6::timestamptz[])
        AS r(id, status, delay, status_code, error, started_at)
)
UPDATE courier.deliveries AS d
SET status = r.status,
    attempts = d.attempts + 1,
    next_attempt_at = CASE WHEN r.delay IS NULL THEN now()
                           ELSE now() + make_interval(secs => r.delay) END,
    lease_token = NULL,
    last_attempt_at = r.started_at,
    last_status_code = r.status_code,
    last_error = r.error,
    delivered_at = CASE WHEN r.status = 'delivered' THEN now() END,
    dead_at = CASE WHEN r.status = 'dead' THEN now() END
FROM r
-- "d.id = ANY($1)" gives the planner an index condition whose row count it knows (the array's
-- length), so it probes the primary key instead of scanning every pending row: statistics are
-- stale right after a burst, which is exactly when this runs most.
WHERE d.id = ANY($1::bigint[]) AND d.id = r.id AND d.lease_token = $7
RETURNING d.id;

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
-- still held; any id missing was taken over by another relay.
UPDATE courier.deliveries
SET next_attempt_at = now() + make_interval(secs => $3)
WHERE id = ANY($1::bigint[]) AND lease_token = $2 AND status = 'pending'
RETURNING id;

-- release_leases --
-- Hand deliveries $1 held by relay $2 back, due at once, for another relay (used on shutdown).
UPDATE courier.deliveries
SET next_attempt_at = now(), lease_token = NULL
WHERE id = ANY($1::bigint[]) AND lease_token = $2 AND status = 'pending';

-- next_due --
-- When the earliest pending delivery of an enabled endpoint becomes due (NULL if none).
SELECT d.next_attempt_at
FROM courier.deliveries AS d
WHERE d.status = 'pending'
  AND EXISTS (SELECT 1 FROM courier.endpoints AS ep WHERE ep.id = d.endpoint_id AND ep.enabled)
ORDER BY d.next_attempt_at
LIMIT 1;

-- register_relay --
-- Announce relay $1 (or refresh it after the UNLOGGED table was emptied by a crash restart).
INSERT INTO courier.relays (id, hostname, pid, idle)
VALUES ($1, $2, $3, false)
ON CONFLICT (id) DO UPDATE SET seen_at = now(), idle = false;

-- heartbeat_relay --
-- Refresh relay $1's liveness; returns nothing when the row is gone (then register again).
UPDATE courier.relays SET seen_at = now() WHERE id = $1 RETURNING id;

-- set_relay_idle --
-- Mark relay $1 as waiting ($2 = true) or working ($2 = false). Producers read this flag.
UPDATE courier.relays SET idle = $2, seen_at = now() WHERE id = $1 AND idle IS DISTINCT FROM $2;

-- reap_relays --
-- Forget relays not seen for $1 seconds (killed without a goodbye) so producers stop
-- notifying on their behalf.
DELETE FROM courier.relays WHERE seen_at < now() - make_interval(secs => $1);

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
    (url, event_types, secret, description, enabled, timeout_seconds, headers)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
RETURNING id, url, event_types, description, enabled, disabled_reason, timeout_seconds,
       headers::text AS headers,
       CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END
           AS previous_secret_expires_at,
       created_at, updated_at;

-- list_endpoints --
-- Endpoints not deleted, oldest first.
SELECT id, url, event_types, description, enabled, disabled_reason, timeout_seconds,
       headers::text AS headers,
       CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END
           AS previous_secret_expires_at,
       created_at, updated_at
FROM courier.endpoints
WHERE deleted_at IS NULL
ORDER BY created_at, id;

-- lock_endpoint --
-- Endpoint $1 (not deleted), locked until the end of the transaction for a read-modify-write.
SELECT id, url, event_types, description, enabled, disabled_reason, timeout_seconds,
       headers::text AS headers,
       CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END
           AS previous_secret_expires_at,
       created_at, updated_at
FROM courier.endpoints
WHERE id = $1 AND deleted_at IS NULL
FOR UPDATE;

-- update_endpoint --
-- Write every settable field of endpoint $1 (the caller merged the change into the current row).
-- Disabling records why ($6); enabling clears the reason.
UPDATE courier.endpoints
SET url = $2, event_types = $3, description = $4, enabled = $5,
    disabled_reason = CASE WHEN $5 THEN NULL ELSE coalesce($6, disabled_reason) END,
    timeout_seconds = $7, headers = $8::jsonb, updated_at = now()
WHERE id = $1 AND deleted_at IS NULL
RETURNING id, url, event_types, description, enabled, disabled_reason, timeout_seconds,
       headers::text AS headers,
       CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END
           AS previous_secret_expires_at,
       created_at, updated_at;

-- rotate_secret --
-- Make $2 endpoint $1's secret; the current one keeps signing beside it for $3 seconds (a grace
-- period of 0 drops it at once). A rotation during a grace period drops the oldest secret.
UPDATE courier.endpoints
SET previous_secret = CASE WHEN $3 > 0 THEN secret END,
    previous_secret_expires_at = CASE WHEN $3 > 0 THEN now() + make_interval(secs => $3) END,
    secret = $2, updated_at = now()
WHERE id = $1 AND deleted_at IS NULL
RETURNING id, url, event_types, description, enabled, disabled_reason, timeout_seconds,
       headers::text AS headers,
       CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END
           AS previous_secret_expires_at,
       created_at, updated_at;

-- delete_endpoint --
-- Delete endpoint $1 softly: it stops receiving at once, its secrets are forgotten (overwritten
-- with a fresh random one no-one knows), and attempts keep a row that says where they went.
UPDATE courier.endpoints
SET deleted_at = now(), enabled = false, disabled_reason = 'deleted', secret = $2,
    previous_secret = NULL, previous_secret_expires_at = NULL, updated_at = now()
WHERE id = $1 AND deleted_at IS NULL
RETURNING id;

-- discard_endpoint_deliveries --
-- Discard the pending and dead deliveries of deleted endpoint $1 (reason recorded). Leased ones
-- are discarded too: the relay's completion is fenced by the lease token and will not apply.
UPDATE courier.deliveries
SET status = 'discarded', discarded_at = now(), lease_token = NULL,
    last_error = coalesce(last_error || '; ', '') || 'discarded: endpoint deleted'
WHERE endpoint_id = $1 AND status IN ('pending', 'dead');

-- sweep_deleted_endpoints --
-- Discard deliveries that a fan-out created for an endpoint in the instant it was deleted (the
-- fan-out's snapshot still saw it). Run by relays' housekeeping; only endpoints deleted in the
-- last hour are looked at, through the open-deliveries index, so the sweep stays cheap.
UPDATE courier.deliveries AS d
SET status = 'discarded', discarded_at = now(), lease_token = NULL,
    last_error = 'discarded: endpoint deleted'
FROM courier.endpoints AS ep
WHERE ep.deleted_at > now() - interval '1 hour'
  AND d.endpoint_id = ep.id AND d.status = 'pending';

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
    (SELECT count(*) FROM courier.deliveries AS d
     WHERE d.endpoint_id = $1 AND d.status = 'pending') AS pending,
    (SELECT count(*) FROM courier.deliveries AS d
     WHERE d.endpoint_id = $1 AND d.status = 'dead') AS dead;

-- endpoint_last_failure --
-- The latest failed attempt of endpoint $1 (walks attempts_endpoint backwards).
SELECT a.started_at, a.status_code, a.error, a.event_id
FROM courier.attempts AS a
WHERE a.endpoint_id = $1 AND a.outcome <> 'delivered'
ORDER BY a.started_at DESC
LIMIT 1;

-- recover_endpoint --
-- Re-queue endpoint $1's failed deliveries since $2: dead ones get a fresh retry schedule, ones
-- waiting for a retry become due now. Leased ones are in flight and left alone. Returns the ids.
UPDATE courier.deliveries
SET status = 'pending', next_attempt_at = now(), dead_at = NULL,
    schedule_base = CASE WHEN status = 'dead' THEN attempts ELSE schedule_base END
WHERE endpoint_id = $1
  AND ((status = 'dead' AND dead_at >= $2)
       OR (status = 'pending' AND lease_token IS NULL AND attempts > schedule_base
           AND last_attempt_at >= $2))
RETURNING id;

-- list_dead --
-- Dead letters, newest first: endpoint $1, event type $2, dead at or after $3 and before $4 (each
-- NULL for any), after the cursor ($5 dead_at, $6 id), $7 at most. Walks deliveries_dead.
SELECT d.id, d.event_id, o.event_type, d.endpoint_id, ep.url, d.attempts, d.last_attempt_at,
       d.last_status_code, d.last_error, d.dead_at
FROM courier.deliveries AS d
JOIN courier.outbox AS o ON o.id = d.event_id
LEFT JOIN courier.endpoints AS ep ON ep.id = d.endpoint_id
WHERE d.status = 'dead'
  AND ($1::uuid IS NULL OR d.endpoint_id = $1)
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
FROM courier.deliveries AS d
JOIN courier.outbox AS o ON o.id = d.event_id
LEFT JOIN courier.endpoints AS ep ON ep.id = d.endpoint_id
WHERE d.id = $1 AND d.status = 'dead';

-- discard_dead --
-- Throw dead letter $1 away for good, recorded as discarded. Returns its id if it was dead.
UPDATE courier.deliveries
SET status = 'discarded', discarded_at = now()
WHERE id = $1 AND status = 'dead'
RETURNING id;

-- replay_dead --
-- Put dead deliveries $1 back in line, due now, with a fresh retry schedule. Only rows still dead
-- change, so replaying twice queues once. Returns the ids queued.
UPDATE courier.deliveries
SET status = 'pending', next_attempt_at = now(), schedule_base = attempts, dead_at = NULL,
    lease_token = NULL
WHERE id = ANY($1::bigint[]) AND status = 'dead'
RETURNING id;

-- replay_matching_dead --
-- Put every dead delivery matching the filters back in line (see replay_dead): endpoint $1,
-- event type $2, dead at or after $3 and before $4, each NULL for any.
UPDATE courier.deliveries AS d
SET status = 'pending', next_attempt_at = now(), schedule_base = d.attempts, dead_at = NULL,
    lease_token = NULL
FROM courier.outbox AS o
WHERE d.status = 'dead' AND o.id = d.event_id
  AND ($1::uuid IS NULL OR d.endpoint_id = $1)
  AND ($2::text IS NULL OR o.event_type = $2)
  AND ($3::timestamptz IS NULL OR d.dead_at >= $3)
  AND ($4::timestamptz IS NULL OR d.dead_at < $4)
RETURNING d.id;

-- bootstrap_migrations --
-- Run by the migrator under its advisory lock, before reading which migrations are applied.
CREATE SCHEMA IF NOT EXISTS courier;
CREATE TABLE IF NOT EXISTS courier.migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- record_migration --
INSERT INTO courier.migrations (version, name, checksum) VALUES ($1, $2, $3);

-- delivery_gauges --
-- One cheap query per scrape: both counts walk partial indexes; the oldest pending event comes
-- from the first entries of the pending indexes' join.
SELECT
    (SELECT count(*) FROM courier.deliveries WHERE status = 'pending') AS pending,
    (SELECT count(*) FROM courier.deliveries WHERE status = 'dead') AS dead,
    extract(epoch FROM now() - least(
        (SELECT min(o.created_at) FROM courier.outbox AS o WHERE o.fanned_out_at IS NULL),
        (SELECT min(o.created_at)
         FROM courier.deliveries AS d JOIN courier.outbox AS o ON o.id = d.event_id
         WHERE d.status = 'pending')
    ))::float8 AS oldest_pending_age;

-- get_endpoint --
SELECT id, url, event_types, description, enabled, disabled_reason, timeout_seconds,
       headers::text AS headers,
       CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END
           AS previous_secret_expires_at,
       created_at, updated_at
FROM courier.endpoints
WHERE id = $1 AND deleted_at IS NULL;

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
-- Where one event stands with each endpoint it was fanned out to.
SELECT d.id, d.endpoint_id, d.status, d.attempts,
       -- next_attempt_at is a lease time while in flight and meaningless once finished
       CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
       d.last_attempt_at,
       d.last_status_code, d.last_error, d.delivered_at, d.dead_at
FROM courier.deliveries AS d
WHERE d.event_id = $1
ORDER BY d.id;

-- event_attempts --
SELECT id, delivery_id, endpoint_id, attempt, started_at, duration_ms, status_code,
       response_body, error, outcome
FROM courier.attempts
WHERE event_id = $1
ORDER BY id;
