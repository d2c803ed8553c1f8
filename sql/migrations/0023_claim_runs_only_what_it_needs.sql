-- 0023: a claim plans and starts only what it runs.
--
-- courier.claim leased its picks in one statement whose CTEs also buried poison deliveries
-- (a DELETE from the queue, INSERTs into the dead letters and the attempts log) and spent rate
-- tokens and circuit probes (an UPDATE of the endpoints). Those rarely have a row to write,
-- but a statement initializes every part of its plan on every run: each INSERT opens its
-- table's indexes and triggers, each CTE scans the rows picked again. Measured side by side in
-- one session (one endpoint, a fresh event fanned out and claimed at a time, 2 ms apart, the
-- queue vacuumed as the relay does): 1.54 -> 1.41 ms a claim on 18, 1.76 -> 1.60 on 15; with 64
-- events a claim 6.16 -> 6.00 ms on 18, 6.85 -> 6.30 on 15.
--
-- The lease is now three steps, each a statement of its own: pick (room, then the due rows
-- locked FOR UPDATE SKIP LOCKED, as before), read into arrays: the ids to lease, earliest due
-- first; the poison ids (claimed p_max_claims times); the endpoints whose rate tokens or
-- circuit probe the leases spend; then lease the ids by primary key and return them (the
-- order of the pick); then, only when there is any, bury the poison and spend the tokens. The
-- rows picked stay locked by this transaction between the statements, so what the pick read
-- of them (their claims) still holds when they are leased or buried. The endpoints' rows are
-- not locked: step 6 checks again which of them spend (an endpoint whose circuit opened or
-- closed since the pick is spent for as it is now, as the single statement's UPDATE did), and
-- the lease reads the endpoints and the events in its own, later snapshot (a URL or secret
-- changed in between is sent with its new value: harmless). Same signature, same
-- rows in the same order (the leased earliest due first, then the buried): a relay of 0022
-- runs unchanged on this schema. tests/integration/test_plans.py and test_claim_backlog.py
-- hold each statement's plan.

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
LANGUAGE plpgsql
-- (0021) A setting of the function's own: CREATE OR REPLACE would otherwise drop it.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    locked uuid[];
    -- (0023) What the pick found: ids to lease (earliest due first), ids to bury, and one
    -- endpoint id per lease that spends a rate token or its circuit's probe.
    lease bigint[];
    poison bigint[];
    spend uuid[];
BEGIN
    -- 1. Fan out (courier.fan_out, 0007): the rules of who receives an event live there.
    IF p_fan_out > 0 THEN
        PERFORM courier.fan_out(p_fan_out);
    END IF;

    -- 2. Endpoints with due work that may take more, locked. (This statement sees the
    -- deliveries just created: they are this transaction's own.)
    -- (0022) The endpoints with queued deliveries are found by a loose scan of
    -- queue_endpoint_due: one descent per endpoint to its earliest due_at, which says whether
    -- it has due work. It costs one probe per endpoint holding deliveries, however many it holds
    -- and however many endpoints hold none; an EXISTS here could be planned as a hash of every
    -- due row, which a flood made 10 ms a claim.
    WITH RECURSIVE queued AS (
        (SELECT q.endpoint_id, q.due_at FROM courier.queue AS q
         ORDER BY q.endpoint_id, q.due_at LIMIT 1)
        UNION ALL
        SELECT n.endpoint_id, n.due_at
        FROM queued AS p
        CROSS JOIN LATERAL (
            SELECT q.endpoint_id, q.due_at FROM courier.queue AS q
            WHERE q.endpoint_id > p.endpoint_id
            ORDER BY q.endpoint_id, q.due_at LIMIT 1
        ) AS n
    )
    SELECT array_agg(c.id) INTO locked
    FROM (
        SELECT ep.id
        FROM queued AS d
        JOIN courier.endpoints AS ep ON ep.id = d.endpoint_id
        WHERE d.due_at <= now()
          AND ep.enabled
          AND (ep.paused_until IS NULL OR ep.paused_until <= now())
          AND (ep.circuit_state = 'closed' OR ep.circuit_until <= now())
          AND coalesce(courier.rate_tokens_now(ep), 1) >= 1
        -- Random order: when there is more work than p_limit, no endpoint is always last.
        ORDER BY random()
        LIMIT greatest(p_limit, 16)
    ) AS c
    -- (Outside the LIMITed subquery, so only those candidates are locked.)
    WHERE pg_try_advisory_xact_lock(1668247919, hashtext(c.id::text));

    IF locked IS NULL THEN
        RETURN;
    END IF;

    -- 3. A new statement, so a fresh snapshot: what each locked endpoint holds now, and the
    -- due deliveries it has room for, locked until this transaction ends.
    WITH room AS (
        SELECT ep.id AS endpoint_id,
               greatest(0, least(
                   CASE WHEN ep.circuit_state = 'closed' THEN ep.max_in_flight - held.n
                        -- The one probe of a circuit due for it. (Due checked again here: a
                        -- circuit that opened since step 2's snapshot must not probe at once.)
                        WHEN held.n = 0 AND ep.circuit_until <= now() THEN 1
                        ELSE 0 END,
                   coalesce(floor(courier.rate_tokens_now(ep))::integer, p_limit))) AS slots,
               -- (0023) Leases here spend rate tokens or the circuit's probe (step 6).
               (ep.rate_limit IS NOT NULL OR ep.circuit_state <> 'closed') AS spends
        FROM courier.endpoints AS ep
        CROSS JOIN LATERAL (
            SELECT count(*)::integer AS n FROM courier.queue AS q
            WHERE q.endpoint_id = ep.id AND q.lease_token IS NOT NULL AND q.due_at > now()
        ) AS held
        WHERE ep.id = ANY (locked)
    ), picked AS (
        SELECT x.id, x.due_at, x.claims, r.endpoint_id, r.spends
        FROM room AS r
        CROSS JOIN LATERAL (
            SELECT q.id, q.due_at, q.claims
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
    )
    SELECT array_agg(p.id ORDER BY p.due_at) FILTER (WHERE p.claims < p_max_claims),
           array_agg(p.id) FILTER (WHERE p.claims >= p_max_claims),
           array_agg(p.endpoint_id) FILTER (WHERE p.claims < p_max_claims AND p.spends)
    INTO lease, poison, spend
    FROM picked AS p;

    -- 4. Lease. (0022) The picked rows by their ids, one primary-key probe each: a join to the
    -- picked rows may be planned as a hash join over the whole queue (its size is a guess), 7 ms
    -- beside 40,000 queued rows. (q.claims is what the pick read: the pick holds the row locked.)
    IF lease IS NOT NULL THEN
        RETURN QUERY
        WITH leased AS (
            -- (0009) Every claim is counted. A delivery claimed before without an attempt
            -- recorded since (claims > 0: its relay died or stalled holding it) gets a lease of
            -- a random length between one and two leases. A relay that dies on a poison
            -- delivery takes the other deliveries of its batch down with it, and with equal
            -- leases they would all come back together, be claimed together by the next relay,
            -- die together, and reach p_max_claims together; spread out, the innocent ones are
            -- claimed without the poison one and delivered (which resets their count). Fresh
            -- claims keep the plain lease.
            UPDATE courier.queue AS q
            SET due_at = now() + make_interval(
                    secs => CASE WHEN q.claims > 0 THEN p_lease * (1 + random()) ELSE p_lease END),
                lease_token = p_relay,
                claims = q.claims + 1
            WHERE q.id = ANY (lease)
            RETURNING q.id, q.event_id, q.endpoint_id, q.attempts, q.schedule_base, q.ordering_key
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
        -- Earliest due first, as picked.
        ORDER BY array_position(lease, l.id);
    END IF;

    -- 5. (0009) Claimed p_max_claims times and never attempted since: dead-lettered, never
    -- leased again, and returned after the leased ones for the relay's log (ids and attempts
    -- only, nothing to send). Only rows this claim picked (and locked) are looked at, so finding
    -- poison costs nothing beyond the claim itself. A poisoned delivery took one of its
    -- endpoint's slots this round, and spends no rate token nor circuit probe.
    IF poison IS NOT NULL THEN
        RETURN QUERY
        WITH poisoned AS (
            DELETE FROM courier.queue AS q WHERE q.id = ANY (poison)
            RETURNING q.*
        ), buried AS (
            INSERT INTO courier.dead_letters
                (id, event_id, endpoint_id, ordering_key, attempts, schedule_base,
                 last_attempt_at, last_error, created_at)
            SELECT p.id, p.event_id, p.endpoint_id, p.ordering_key, p.attempts + 1,
                   p.schedule_base, now(), courier.poison_reason(p.claims), p.created_at
            FROM poisoned AS p
        ), noted AS (
            -- The attempts log says why, as for any other dead letter (the attempt may well
            -- have gone out before its relay died: it counts as one).
            INSERT INTO courier.attempts
                (delivery_id, event_id, endpoint_id, attempt, started_at, duration_ms, error,
                 outcome)
            SELECT p.id, p.event_id, p.endpoint_id, p.attempts + 1, now(), 0,
                   courier.poison_reason(p.claims), 'dead'
            FROM poisoned AS p
        )
        -- (Typed: alone, not under a UNION with the leased rows, a NULL would be text.)
        SELECT p.id, p.event_id, p.endpoint_id, p.attempts + 1, p.schedule_base, NULL::text,
               NULL::text, NULL::timestamptz, p.ordering_key, NULL::text, NULL::float8,
               NULL::text, NULL::text[], NULL::text, NULL::integer[], NULL::boolean, NULL::text,
               NULL::text, NULL::text, NULL::text, true
        FROM poisoned AS p;
    END IF;

    -- 6. Rate tokens spent, and circuits whose probe just left: only those rows are written.
    -- (After the lease, whose rows' troubled flag reads each circuit before its probe is spent.)
    IF spend IS NOT NULL THEN
        UPDATE courier.endpoints AS ep
        SET rate_tokens = CASE WHEN ep.rate_limit IS NULL THEN ep.rate_tokens
                               ELSE courier.rate_tokens_now(ep) - pe.n END,
            rate_tokens_at = CASE WHEN ep.rate_limit IS NULL THEN ep.rate_tokens_at ELSE now() END,
            circuit_state = CASE WHEN ep.circuit_state = 'closed' THEN 'closed' ELSE 'half_open' END,
            circuit_until = CASE WHEN ep.circuit_state = 'closed' THEN ep.circuit_until
                                 ELSE now() + make_interval(secs => p_lease) END
        FROM (SELECT s.e AS endpoint_id, count(*) AS n FROM unnest(spend) AS s(e) GROUP BY s.e)
            AS pe
        -- (Checked again on the row as it is now: not redundant with the pick's spends.)
        WHERE ep.id = pe.endpoint_id
          AND (ep.rate_limit IS NOT NULL OR ep.circuit_state <> 'closed');
    END IF;
END
$$;
