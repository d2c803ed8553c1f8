-- 0004: an endpoint receives only events created after it (as Svix and Stripe do).
--
-- Before, fan-out joined every endpoint that existed when the event was fanned out, so a new
-- endpoint also received older events that no relay had fanned out yet (a backlog, or events
-- committed while every relay was down): a receiver registered today could get yesterday's
-- events, and which ones depended on how far behind the relays were. The rule is now a property
-- of the two rows alone: endpoint.created_at <= event.created_at. (An endpoint's created_at is
-- its transaction's start, an event's is the moment of its INSERT.) Operators who want older
-- events sent to a new endpoint re-send them; recover/replay are for an endpoint's own history.
--
-- courier.claim is the function of 0003 with that one condition added to the fan-out join.

CREATE OR REPLACE FUNCTION courier.claim(
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
    -- patterns match and that existed when the event was created, due at once. Disabled
    -- endpoints get theirs too, held until enabled again (nothing is lost while an endpoint is
    -- paused); deleted ones get nothing.
    -- Fan-out is serialised across relays by a transaction-level advisory lock taken with try
    -- (a relay finding it held skips fan-out this time: another relay is doing it). Per-key
    -- order rests on it: a key's deliveries are created, and numbered, in the order its events
    -- became visible, and no later one can commit before an earlier one exists.
    -- Which lock does what: the advisory lock alone keeps relays apart here, so the event rows
    -- are read without a row lock. (0003 read them FOR UPDATE SKIP LOCKED, which added nothing
    -- against other relays and skipped rows locked by transactions outside pgcourier -- e.g. an
    -- insert into an application table with a foreign key to courier.outbox holds FOR KEY
    -- SHARE -- so a later event of the same key could be fanned out, and sent, first:
    -- tests/integration/test_claim_races.py.) The marking UPDATE takes FOR NO KEY UPDATE, which
    -- such key-share locks do not block; any other lock only delays fan-out.
    IF p_fan_out > 0 AND pg_try_advisory_xact_lock(1668247919, 0) THEN
        WITH events AS (
            SELECT o.id, o.seq, o.event_type, o.ordering_key, o.created_at
            FROM courier.outbox AS o
            WHERE o.fanned_out_at IS NULL
            ORDER BY o.seq
            LIMIT p_fan_out
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
          ON ep.deleted_at IS NULL AND ep.created_at <= e.created_at
         AND courier.event_type_matches(ep.event_types, e.event_type)
        ORDER BY e.seq, ep.id;
    END IF;

    -- 2. Endpoints with due work that may take more, locked. (This statement sees the
    -- deliveries just created: they are this transaction's own.)
    -- The per-endpoint advisory lock is what holds each endpoint's limits across relays: step 3
    -- counts what the endpoint has in flight, its rate tokens and whether its circuit's one probe
    -- is out, and that count is right only if no other claim for the endpoint sits between its
    -- own count and its commit. Taken with try: a relay finding it held leaves the endpoint to
    -- the claim holding it (test_claim_races.py: claims started at one moment, many rounds).
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
    -- FOR UPDATE SKIP LOCKED on the deliveries: not against other claims (the endpoint's lock
    -- keeps them off these rows), but so that the rows leased are the rows checked, and so that
    -- a due row another writer holds (a completion moving a key's followers, a deletion
    -- discarding an endpoint's deliveries) is left for the next claim rather than waited for
    -- while this one holds its endpoint locks (test_claim_races.py, the locked delivery row).
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

