-- 0009: poison deliveries are bounded (issue 12, part 4).
--
-- A delivery whose attempt kills the relay process (a crash in a library, the OOM killer, a
-- segfault on one payload) is never recorded as attempted: its lease runs out, another relay
-- claims it, and dies the same way, forever. courier.queue now counts the claims made since the
-- last attempt was recorded (complete_deliveries resets the count; a lease handed back at
-- shutdown gives its claim back), and the claim dead-letters a delivery that has been claimed
-- p_max_claims times without one, with an attempt row whose error says so, instead of leasing
-- it once more. The relay that buries it logs an error with its ids.
--
-- Relays of an older version must be stopped before this runs (as for 0006): the claim's
-- signature changes (p_max_claims, and a "poisoned" column in what it returns), so the old
-- four-argument function is dropped.

-- Constant default: a metadata-only change, no rewrite of the queue.
ALTER TABLE courier.queue ADD COLUMN claims integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN courier.queue.claims IS
    'Claims since the last recorded attempt; at PGCOURIER_MAX_CLAIMS the claim dead-letters it.';

DROP FUNCTION courier.claim(integer, double precision, uuid, integer);

-- The reason a poison delivery is dead-lettered with, in one place for the claim's two writes.
CREATE FUNCTION courier.poison_reason(claims integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN format('claimed %s times without an attempt recorded: the relay may be crashing on it '
              '(a relay process died or stalled each time it held this delivery)', claims);

-- courier.claim as in 0007 (step 1 calls courier.fan_out), with the poison bound. Steps 1 and 2
-- (lock endpoints) are unchanged; every change is in step 3 and marked "(0009)". The plan shape stays: the poison
-- check reads only the rows the claim picked, and the buried rows are appended to the result.
CREATE OR REPLACE FUNCTION courier.claim(
    p_limit integer, p_lease double precision, p_relay uuid, p_fan_out integer,
    -- (0009) Claims without a recorded attempt after which a delivery is dead-lettered.
    p_max_claims integer
)
RETURNS TABLE (
    id bigint, event_id uuid, endpoint_id uuid, attempts integer, schedule_base integer,
    event_type text, payload text, created_at timestamptz, ordering_key text, url text,
    timeout_seconds double precision, headers text, secrets text[], signature_scheme text,
    permanent_statuses integer[], troubled boolean, kind text, slack_channel text,
    slack_token text, template text,
    -- (0009) True for a delivery this call dead-lettered as poison (only its ids and attempts
    -- are set); the relay logs it and sends nothing.
    poisoned boolean
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    locked uuid[];
BEGIN
    -- 1. Fan out (courier.fan_out, 0007): the rules of who receives an event live there.
    IF p_fan_out > 0 THEN
        PERFORM courier.fan_out(p_fan_out);
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
        -- (0009) claims rides along, read from the locked row: the lease and the burial below
        -- split picked rows by it, and no other statement has to look for poison.
        SELECT x.id, x.claims
        FROM room AS r
        CROSS JOIN LATERAL (
            SELECT q.id, q.claims
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
        -- (0009) Every claim is counted. A delivery claimed before without an attempt recorded
        -- since (claims > 0: its relay died or stalled holding it) gets a lease of a random
        -- length between one and two leases. A relay that dies on a poison delivery takes the
        -- other deliveries of its batch down with it, and with equal leases they would all
        -- come back together, be claimed together by the next relay, die together, and reach
        -- p_max_claims together; spread out, the innocent ones are claimed without the poison
        -- one and delivered (which resets their count). Fresh claims keep the plain lease.
        UPDATE courier.queue AS q
        SET due_at = now() + make_interval(
                secs => CASE WHEN q.claims > 0 THEN p_lease * (1 + random()) ELSE p_lease END),
            lease_token = p_relay,
            claims = q.claims + 1
        FROM picked
        WHERE q.id = picked.id AND picked.claims < p_max_claims
        RETURNING q.id, q.event_id, q.endpoint_id, q.attempts, q.schedule_base, q.ordering_key
    ), poisoned AS (
        -- (0009) Claimed p_max_claims times and never attempted since: dead-lettered, never
        -- leased again. Only rows this claim picked (and locked) are looked at, so finding
        -- poison costs nothing beyond the claim itself. A poisoned delivery took one of its
        -- endpoint's slots this round, and spends no rate token nor circuit probe.
        DELETE FROM courier.queue AS q
        USING picked
        WHERE q.id = picked.id AND picked.claims >= p_max_claims
        RETURNING q.*
    ), buried AS (
        INSERT INTO courier.dead_letters
            (id, event_id, endpoint_id, ordering_key, attempts, schedule_base, last_attempt_at,
             last_error, created_at)
        SELECT p.id, p.event_id, p.endpoint_id, p.ordering_key, p.attempts + 1, p.schedule_base,
               now(), courier.poison_reason(p.claims), p.created_at
        FROM poisoned AS p
    ), noted AS (
        -- The attempts log says why, as for any other dead letter (the attempt may well have
        -- gone out before its relay died: it counts as one).
        INSERT INTO courier.attempts
            (delivery_id, event_id, endpoint_id, attempt, started_at, duration_ms, error, outcome)
        SELECT p.id, p.event_id, p.endpoint_id, p.attempts + 1, now(), 0,
               courier.poison_reason(p.claims), 'dead'
        FROM poisoned AS p
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
           ep.kind, ep.slack_channel, ep.slack_token, ep.template, false
    FROM leased AS l
    CROSS JOIN LATERAL (
        SELECT o.event_type, o.payload, o.created_at
        FROM courier.outbox AS o WHERE o.id = l.event_id LIMIT 1
    ) AS o
    JOIN courier.endpoints AS ep ON ep.id = l.endpoint_id
    -- (0009) The buried ones, for the relay's log: ids and attempts only, nothing to send.
    UNION ALL
    SELECT p.id, p.event_id, p.endpoint_id, p.attempts + 1, p.schedule_base, NULL, NULL, NULL,
           p.ordering_key, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, true
    FROM poisoned AS p;
END
$$;

-- Handing a lease back at shutdown (release_leases) gives its claim back: the relay chose not to
-- send it, it did not die on it. That is in sql/queries/claim.sql.

-- New functions of this migration: as 0005, EXECUTE for the owner only.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA courier FROM PUBLIC;
