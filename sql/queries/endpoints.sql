-- Endpoint management behind the API, CLI and console.
-- Named queries: each block starts with a line "-- name --"; the comment lines after it say
-- what it does. Loaded by pgcourier.db.load_queries() from every file in sql/queries/.

-- create_endpoint --
INSERT INTO courier.endpoints
    (url, event_types, secret, description, enabled, timeout_seconds, headers, signature_scheme,
     permanent_statuses, max_in_flight, rate_limit, kind, slack_channel, slack_token, template,
     tenant)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12, $13, $14, $15, $16)
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
-- Endpoints not deleted, oldest first (the view leaves secrets out); only tenant $1's when given.
SELECT * FROM courier.endpoint_public
WHERE $1::text IS NULL OR tenant = $1
ORDER BY created_at, id;

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
    slack_token = coalesce($15, slack_token), tenant = $16, updated_at = now()
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
-- with a fresh random one no-one knows, $2), its Slack token too, and attempts keep a row that
-- says where they went.
UPDATE courier.endpoints
SET deleted_at = now(), enabled = false, disabled_reason = 'deleted', secret = $2,
    previous_secret = NULL, previous_secret_expires_at = NULL, slack_token = NULL,
    updated_at = now()
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

-- lock_fan_out --
-- Wait for any fan-out in flight and keep the next one out until this transaction ends (the
-- key courier.fan_out try-locks, 0007).
SELECT pg_advisory_xact_lock(1668247919, 0);

-- discard_foreign_tenant_deliveries --
-- Endpoint $1 now belongs to tenant $2 (NULL: every tenant): its queued and dead deliveries of
-- events it may no longer receive are discarded (to the history, reason recorded), so that
-- neither a claim nor a replay or recover sends one tenant's events to another's receiver. The
-- caller holds the fan-out lock first (see update_endpoint), so no fan-out in flight can still
-- queue an event of the old tenant. Leased ones too: the completion is fenced by its lease.
WITH foreign_events AS (
    SELECT o.id FROM courier.outbox AS o
    WHERE o.id IN (SELECT q.event_id FROM courier.queue AS q WHERE q.endpoint_id = $1
                   UNION ALL
                   SELECT d.event_id FROM courier.dead_letters AS d WHERE d.endpoint_id = $1)
      AND $2::text IS NOT NULL AND o.tenant IS DISTINCT FROM $2::text
), queued AS (
    DELETE FROM courier.queue AS q
    WHERE q.endpoint_id = $1 AND q.event_id IN (SELECT id FROM foreign_events) RETURNING q.*
), dead AS (
    DELETE FROM courier.dead_letters AS d
    WHERE d.endpoint_id = $1 AND d.event_id IN (SELECT id FROM foreign_events) RETURNING d.*
)
INSERT INTO courier.delivery_history
    (id, event_id, endpoint_id, ordering_key, status, attempts, schedule_base, last_attempt_at,
     last_status_code, last_error, dead_at, discarded_at, created_at)
SELECT id, event_id, endpoint_id, ordering_key, 'discarded', attempts, schedule_base,
       last_attempt_at, last_status_code,
       coalesce(last_error || '; ', '') || 'discarded: the endpoint moved to another tenant',
       NULL, now(), created_at
FROM queued
UNION ALL
SELECT id, event_id, endpoint_id, ordering_key, 'discarded', attempts, schedule_base,
       last_attempt_at, last_status_code,
       coalesce(last_error || '; ', '') || 'discarded: the endpoint moved to another tenant',
       dead_at, now(), created_at
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
-- now, and so do the never-attempted deliveries queued behind them on their ordering keys. Rows
-- that changed since they were listed (delivered, leased, already recovered) are left alone.
-- Returns the ids recovered.
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
    RETURNING q.id, q.ordering_key
), heads AS (
    SELECT h.ordering_key, min(h.id) AS id
    FROM (SELECT r.id, r.ordering_key FROM revived AS r
          UNION ALL SELECT u.id, u.ordering_key FROM hurried AS u) AS h
    WHERE h.ordering_key IS NOT NULL
    GROUP BY h.ordering_key
), followers AS (
    -- Deliveries queued behind those on their key that were never attempted: they were given
    -- the retry time of the one ahead (hold_key_followers, the fan-out of 0014), a retry that
    -- is now not waited for, so they are due now too. The claim still sends them in key order.
    -- (Disjoint from hurried: those have been attempted.)
    UPDATE courier.queue AS q
    SET due_at = now()
    FROM heads AS k
    WHERE q.endpoint_id = $2 AND q.ordering_key = k.ordering_key AND q.id > k.id
      AND q.lease_token IS NULL AND q.last_attempt_at IS NULL AND q.due_at > now()
)
SELECT id FROM requeued UNION ALL SELECT id FROM hurried;

-- get_endpoint --
SELECT * FROM courier.endpoint_public WHERE id = $1;
