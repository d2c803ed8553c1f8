-- 0003: delivery policies per endpoint (issue 5).
--
-- * signature scheme: standard (Standard Webhooks, whsec_ secrets), github, timestamped-hex or
--   stripe-style (the secret's UTF-8 bytes are the HMAC key, so any 16+ character secret works);
-- * statuses treated as permanent (dead at once);
-- * concurrency and rate limits, enforced across every relay at claim time;
-- * Retry-After: paused_until holds the whole endpoint back after a 429/503 that asked for it;
-- * a circuit breaker shared by every relay: consecutive failures open it, a cool-down later one
--   probe goes through (half_open), a success closes it;
-- * failing_since, to disable endpoints that have failed continuously for too long;
-- * ordering keys copied onto deliveries, so that one key is delivered in order per endpoint;
-- * destination kinds: a webhook (POST to url) or a Slack channel (chat.postMessage), with an
--   optional bot token of its own and a message template.

ALTER TABLE courier.endpoints
    DROP CONSTRAINT endpoint_secret_is_whsec,
    DROP CONSTRAINT endpoint_previous_secret_is_whsec,
    ADD COLUMN signature_scheme text NOT NULL DEFAULT 'standard'
        CONSTRAINT endpoint_signature_scheme_known
        CHECK (signature_scheme IN ('standard', 'github', 'timestamped-hex', 'stripe-style')),
    -- Standard Webhooks keys are base64 after whsec_; the other schemes key HMAC with the
    -- secret's own bytes, so they take any printable secret of 16 to 500 characters.
    ADD CONSTRAINT endpoint_secret_fits_scheme CHECK (
        CASE WHEN signature_scheme = 'standard'
             THEN secret ~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$'
                  AND coalesce(previous_secret ~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$', true)
             -- (Postgres regexes repeat at most 255 times: the length is checked apart.)
             ELSE secret ~ '^[[:print:]]{16,}$' AND length(secret) <= 500
                  AND coalesce(previous_secret ~ '^[[:print:]]{16,}$'
                               AND length(previous_secret) <= 500, true)
        END),
    ADD COLUMN permanent_statuses integer[] NOT NULL DEFAULT '{}'
        CONSTRAINT endpoint_permanent_statuses_are_failures
        CHECK (cardinality(permanent_statuses) <= 100
               AND 300 <= ALL (permanent_statuses) AND 599 >= ALL (permanent_statuses)),
    ADD COLUMN max_in_flight integer NOT NULL DEFAULT 10
        CONSTRAINT endpoint_max_in_flight_in_range CHECK (max_in_flight BETWEEN 1 AND 1000),
    ADD COLUMN rate_limit double precision
        CONSTRAINT endpoint_rate_limit_in_range CHECK (rate_limit > 0 AND rate_limit <= 10000),
    -- Token bucket of the rate limit (burst: one second's worth, at least one request).
    ADD COLUMN rate_tokens double precision NOT NULL DEFAULT 0,
    ADD COLUMN rate_tokens_at timestamptz,  -- NULL: a full bucket
    ADD COLUMN paused_until timestamptz,
    ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0,
    ADD COLUMN circuit_state text NOT NULL DEFAULT 'closed'
        CONSTRAINT endpoint_circuit_state_known
        CHECK (circuit_state IN ('closed', 'open', 'half_open')),
    -- open: when a probe may go; half_open: when the probe's lease runs out (a probe whose
    -- relay died must not hold the circuit forever).
    ADD COLUMN circuit_until timestamptz,
    -- The cool-down the next opening will use, in seconds (doubles up to a cap, resets on
    -- success).
    ADD COLUMN circuit_cooldown double precision,
    ADD COLUMN failing_since timestamptz,
    ADD COLUMN disabled_at timestamptz,
    ADD COLUMN kind text NOT NULL DEFAULT 'webhook'
        CONSTRAINT endpoint_kind_known CHECK (kind IN ('webhook', 'slack')),
    ADD COLUMN slack_channel text
        CONSTRAINT endpoint_slack_channel_valid CHECK (slack_channel ~ '^[#@]?[A-Za-z0-9._-]{1,80}$'),
    -- NULL: the relay's PGCOURIER_SLACK_BOT_TOKEN. Never returned by the API, never logged.
    ADD COLUMN slack_token text
        CONSTRAINT endpoint_slack_token_valid CHECK (slack_token ~ '^xox[a-z]-[A-Za-z0-9-]{8,}$'),
    ADD COLUMN template text CONSTRAINT endpoint_template_short CHECK (length(template) <= 3000),
    -- Set on the one endpoint pgcourier manages from PGCOURIER_SLACK_BOT_TOKEN and
    -- PGCOURIER_SLACK_DEFAULT_CHANNEL.
    ADD COLUMN managed boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT endpoint_slack_needs_a_channel
        CHECK (kind <> 'slack' OR slack_channel IS NOT NULL);

CREATE UNIQUE INDEX endpoints_one_managed ON courier.endpoints (managed)
    WHERE managed AND deleted_at IS NULL;

-- What the API shows of an endpoint, defined once for every query that returns endpoints.
CREATE VIEW courier.endpoint_public AS
SELECT id, url, event_types, description, enabled, disabled_reason, disabled_at,
       signature_scheme, timeout_seconds, headers::text AS headers, permanent_statuses,
       max_in_flight, rate_limit,
       CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END
           AS previous_secret_expires_at,
       circuit_state, consecutive_failures, failing_since,
       CASE WHEN paused_until > now() THEN paused_until END AS paused_until,
       kind, slack_channel, slack_token IS NOT NULL AS slack_token_set, template, managed,
       created_at, updated_at
FROM courier.endpoints
WHERE deleted_at IS NULL;

ALTER TABLE courier.deliveries ADD COLUMN ordering_key text;

-- Per-key order: the head of a key at an endpoint is its pending delivery with the lowest id.
CREATE INDEX deliveries_key_order ON courier.deliveries (endpoint_id, ordering_key, id)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;

-- Claims walk each open endpoint's due deliveries in time order.
CREATE INDEX deliveries_endpoint_due ON courier.deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';

-- In flight (leased) per endpoint, for the concurrency limit: only leased rows are indexed, so
-- the count costs as much as the work in flight, never the backlog.
CREATE INDEX deliveries_leased ON courier.deliveries (endpoint_id)
    WHERE status = 'pending' AND lease_token IS NOT NULL;

-- Claims and next-due now go endpoint by endpoint (deliveries_endpoint_due); nothing reads the
-- global due order or the endpoint's whole history by creation time any more.
DROP INDEX courier.deliveries_due;
DROP INDEX courier.deliveries_endpoint;

-- Tokens an endpoint's rate limit allows now (NULL: no limit). The bucket holds one second's
-- worth of requests, at least one, and starts full.
CREATE FUNCTION courier.rate_tokens_now(ep courier.endpoints) RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN ep.rate_limit IS NULL THEN NULL
        WHEN ep.rate_tokens_at IS NULL THEN greatest(ep.rate_limit, 1)
        ELSE least(greatest(ep.rate_limit, 1),
                   ep.rate_tokens
                   + ep.rate_limit * extract(epoch FROM now() - ep.rate_tokens_at)::float8)
    END
$$;

-- Lease up to p_limit due deliveries to relay p_relay for p_lease seconds, honouring each
-- endpoint's policies. Disabled, paused (Retry-After) and open-circuit endpoints get nothing;
-- an open circuit whose cool-down has passed gets one probe (and turns half_open); the others get
-- at most their free concurrency (max_in_flight minus what every relay holds) and their rate
-- tokens. A delivery with an ordering key waits until every earlier delivery of its key at that
-- endpoint is finished (delivered, dead or discarded).
--
-- Why a function: the endpoints are first locked (transaction-scoped advisory locks, taken with
-- try: a relay finding one locked leaves it to the relay already claiming for it), and only then
-- is what they hold counted. Under READ COMMITTED each statement here takes a new snapshot, so
-- the count sees every claim committed before the lock was ours; in one statement it could be
-- stale, and two relays could fill the same free slots.
CREATE FUNCTION courier.claim(
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
    locked uuid[];
BEGIN
    -- 1. Fan out up to p_fan_out events not yet fanned out: one delivery per endpoint whose
    -- patterns match, due at once. Disabled endpoints get theirs too, held until enabled again
    -- (nothing is lost while an endpoint is paused); deleted ones get nothing.
    -- Fan-out is serialised across relays by a transaction-level advisory lock taken with try
    -- (a relay finding it held skips fan-out this time: another relay is doing it). Per-key
    -- order rests on it: a key's deliveries are created, and numbered, in the order its events
    -- became visible, and no later one can commit before an earlier one exists.
    IF p_fan_out > 0 AND pg_try_advisory_xact_lock(1668247919, 0) THEN
        WITH events AS (
            SELECT o.id, o.seq, o.event_type, o.ordering_key
            FROM courier.outbox AS o
            WHERE o.fanned_out_at IS NULL
            ORDER BY o.seq
            LIMIT p_fan_out
            FOR UPDATE SKIP LOCKED
        ), marked AS (
            UPDATE courier.outbox AS o
            SET fanned_out_at = now()
            FROM events AS e
            WHERE o.id = e.id
        )
        INSERT INTO courier.deliveries (event_id, endpoint_id, ordering_key)
        SELECT e.id, ep.id, e.ordering_key
        FROM events AS e
        JOIN courier.endpoints AS ep
          ON ep.deleted_at IS NULL AND courier.event_type_matches(ep.event_types, e.event_type)
        ORDER BY e.seq, ep.id;
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
              SELECT 1 FROM courier.deliveries AS d
              WHERE d.endpoint_id = ep.id AND d.status = 'pending' AND d.next_attempt_at <= now())
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
                        WHEN held.n = 0 THEN 1  -- the one probe of a circuit due for it
                        ELSE 0 END,
                   coalesce(floor(courier.rate_tokens_now(ep))::integer, p_limit))) AS slots
        FROM courier.endpoints AS ep
        CROSS JOIN LATERAL (
            SELECT count(*)::integer AS n FROM courier.deliveries AS d
            WHERE d.endpoint_id = ep.id AND d.status = 'pending'
              AND d.lease_token IS NOT NULL AND d.next_attempt_at > now()
        ) AS held
        WHERE ep.id = ANY (locked)
    ), picked AS (
        SELECT x.id
        FROM room AS r
        CROSS JOIN LATERAL (
            SELECT d.id
            FROM courier.deliveries AS d
            WHERE d.endpoint_id = r.endpoint_id AND d.status = 'pending'
              AND d.next_attempt_at <= now()
              AND (d.ordering_key IS NULL OR NOT EXISTS (
                  SELECT 1 FROM courier.deliveries AS h
                  WHERE h.endpoint_id = d.endpoint_id AND h.ordering_key = d.ordering_key
                    AND h.status = 'pending' AND h.id < d.id))
            ORDER BY d.next_attempt_at
            LIMIT r.slots
            FOR UPDATE SKIP LOCKED
        ) AS x
        LIMIT p_limit
    ), leased AS (
        UPDATE courier.deliveries AS d
        SET next_attempt_at = now() + make_interval(secs => p_lease), lease_token = p_relay
        FROM picked
        WHERE d.id = picked.id
        RETURNING d.id, d.event_id, d.endpoint_id, d.attempts, d.schedule_base, d.ordering_key
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
    JOIN courier.outbox AS o ON o.id = l.event_id
    JOIN courier.endpoints AS ep ON ep.id = l.endpoint_id;
END
$$;

COMMENT ON FUNCTION courier.claim(integer, double precision, uuid, integer) IS
    'Fan out fresh events, then lease due deliveries to a relay within every endpoint''s '
    'limits, circuit and key order.';

-- Apply what a batch of attempts says about each endpoint; called by relays after writing the
-- batch, only when it holds a failure, a Retry-After, a 410 or an endpoint that was not healthy.
-- Per endpoint: p_ok (a success in the batch), p_trailing (failures after its last success),
-- p_pause (seconds of Retry-After, NULL none), p_gone (a reason to disable it now, NULL none).
-- Endpoints are locked in id order, so relays applying batches at once cannot deadlock.
CREATE FUNCTION courier.apply_endpoint_outcomes(
    endpoint_ids uuid[], p_ok boolean[], p_trailing integer[], p_pause double precision[],
    p_gone text[], circuit_threshold integer, cooldown_first double precision,
    cooldown_max double precision, disable_after double precision
) RETURNS TABLE (endpoint_id uuid, circuit_state text, enabled boolean, disabled_reason text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    ep courier.endpoints;
    i integer;
    failures integer;
    new_state text;
    new_until timestamptz;
    new_cooldown double precision;
    new_failing timestamptz;
    reason text;
BEGIN
    FOR ep IN
        SELECT * FROM courier.endpoints AS e
        WHERE e.id = ANY (endpoint_ids) ORDER BY e.id FOR NO KEY UPDATE
    LOOP
        i := array_position(endpoint_ids, ep.id);
        failures := CASE WHEN p_ok[i] THEN p_trailing[i] ELSE ep.consecutive_failures + p_trailing[i] END;
        new_state := ep.circuit_state;
        new_until := ep.circuit_until;
        new_cooldown := ep.circuit_cooldown;
        IF p_trailing[i] = 0 THEN
            new_state := 'closed';
            new_until := NULL;
            new_cooldown := NULL;
        ELSIF ep.circuit_state = 'half_open' OR (ep.circuit_state = 'closed'
                                                 AND failures >= circuit_threshold) THEN
            -- Opening, or a failed probe: wait, each time twice as long (up to the cap).
            new_cooldown := least(coalesce(ep.circuit_cooldown * 2, cooldown_first), cooldown_max);
            IF ep.circuit_state = 'closed' THEN
                new_cooldown := cooldown_first;
            END IF;
            new_state := 'open';
            new_until := now() + make_interval(secs => new_cooldown);
        END IF;
        new_failing := CASE WHEN p_trailing[i] = 0 THEN NULL
                            WHEN p_ok[i] THEN now()
                            ELSE coalesce(ep.failing_since, now()) END;
        reason := p_gone[i];
        IF reason IS NULL AND disable_after IS NOT NULL AND ep.enabled
           AND new_failing <= now() - make_interval(secs => disable_after) THEN
            reason := format('failing continuously since %s', new_failing);
        END IF;
        UPDATE courier.endpoints AS e
        SET consecutive_failures = failures,
            failing_since = new_failing,
            circuit_state = new_state,
            circuit_until = new_until,
            circuit_cooldown = new_cooldown,
            paused_until = CASE WHEN p_pause[i] IS NULL THEN e.paused_until
                                ELSE greatest(e.paused_until,
                                              now() + make_interval(secs => p_pause[i])) END,
            enabled = CASE WHEN reason IS NULL THEN e.enabled ELSE false END,
            disabled_reason = coalesce(reason, e.disabled_reason),
            disabled_at = CASE WHEN reason IS NULL THEN e.disabled_at ELSE now() END,
            updated_at = CASE WHEN reason IS NULL THEN e.updated_at ELSE now() END
        WHERE e.id = ep.id;
        endpoint_id := ep.id;
        circuit_state := new_state;
        enabled := ep.enabled AND reason IS NULL;
        disabled_reason := reason;
        RETURN NEXT;
    END LOOP;
END
$$;
