-- 0020: going idle, the claim that must follow it and the next due time, in one round trip.
--
-- A relay that finds nothing to claim marks itself idle (courier.relay_idle: 0018, 0019), claims
-- once more for whatever producers that read it busy committed meanwhile, and reads when the
-- next delivery is due (its timer) before it sleeps. Those were three round trips, each waking
-- the relay and a backend: at a trickle of events (a few hundred a second, one event per
-- wake-up) the relay made about six round trips an event, half of them these.
--
-- courier.claim_going_idle makes them one statement, so one transaction, in this order:
-- 1. courier.relay_idle, unchanged: the flag, then the wait for the producers' commits in
--    progress, under the producers' lock (0018), which is now held until the claim below has
--    ended (and this commit: the relay's claim session commits without waiting for its WAL
--    flush). Producers that commit meanwhile cannot have their shared lock, so they notify
--    without reading the flags: nothing is missed, a few more notifications go out.
-- 2. courier.claim, only when the producers whose commits were in progress were waited for
--    ('settled' with a wait) or the flag already said idle ('held': the row is locked and its
--    committed flag says idle, so producers notify, 0017): a new statement, so it sees their
--    events. The flag write is not committed yet, so a producer that commits during this claim
--    and reads the flags reads "busy": only the producers' lock (or the held row) makes it
--    notify. Without either ('settled' without a wait: IDLE_SETTLE_TIMEOUT=0 or paused;
--    'unsettled'; 'busy') nothing is claimed here: the relay claims in a statement of its own
--    after this one has committed, as before 0020.
--    That claim must not hold the producers' lock for long: other relays going idle queue
--    behind it (past their IDLE_SETTLE_TIMEOUT they give up waiting for producers, for 10 s).
--    A claim waits for a lock only in rare cases (an endpoint's row that an operator or a
--    completion holds, when the claim spends rate tokens or sends a circuit's probe), and here
--    it waits at most p_row_wait: past that it is undone (a subtransaction) and claimed says
--    false, so the relay claims on its own, waiting as long as any claim does. (Its rows are
--    not returned: courier.claim, PL/pgSQL, hands over its result only once it has ended.)
--    (relay_idle's lock_timeouts and this one are local to this statement's transaction.)
-- 3. When the claim took nothing: the next due time, as the named query next_due (now
--    courier.next_due, which that query calls: one text for both).
-- now() is this transaction's start, before the wait for producers (50 ms at most by
-- default): a retry that comes due during that wait is not due for this claim, and comes back
-- as a next due time already past, which the relay looks at again after 50 ms.
--
-- Every row returned is a claimed delivery (courier.claim's columns, idle_state and next_due
-- NULL), then one last row with id NULL: idle_state (relay_idle's answer), claimed (whether
-- step 2 ran and was kept) and next_due (step 3, NULL when not read).
-- (PL/pgSQL, not SQL: before Postgres 18 a SQL function that cannot be inlined is planned
-- again on every call; PL/pgSQL keeps its statements' plans for the session.)
CREATE FUNCTION courier.next_due() RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    due timestamptz;
BEGIN
    SELECT min(greatest(q.due_at, ep.paused_until,
                        CASE WHEN ep.circuit_state <> 'closed' THEN ep.circuit_until END))
    INTO due
    FROM courier.endpoints AS ep
    CROSS JOIN LATERAL (
        SELECT x.due_at
        FROM courier.queue AS x
        WHERE x.endpoint_id = ep.id
        ORDER BY x.due_at
        LIMIT 1
    ) AS q
    WHERE ep.enabled;
    RETURN due;
END
$$;

CREATE FUNCTION courier.claim_going_idle(
    p_relay uuid, p_hostname text, p_pid integer, p_settle double precision,
    p_row_wait double precision, p_limit integer, p_lease double precision, p_fan_out integer,
    p_max_claims integer
)
RETURNS TABLE (
    id bigint, event_id uuid, endpoint_id uuid, attempts integer, schedule_base integer,
    event_type text, payload text, created_at timestamptz, ordering_key text, url text,
    timeout_seconds double precision, headers text, secrets text[], signature_scheme text,
    permanent_statuses integer[], troubled boolean, kind text, slack_channel text,
    slack_token text, template text, poisoned boolean,
    idle_state text, claimed boolean, next_due timestamptz
)
LANGUAGE plpgsql AS $$
DECLARE
    v_state text;
    v_claim boolean;
BEGIN
    v_state := courier.relay_idle(p_relay, true, p_hostname, p_pid, p_settle, p_row_wait);
    v_claim := v_state = 'held' OR (v_state = 'settled' AND coalesce(p_settle, 0) > 0);
    IF v_claim THEN
        PERFORM set_config('lock_timeout', greatest(ceil(p_row_wait * 1000), 1)::bigint || 'ms',
                           true);
        BEGIN
            RETURN QUERY
            SELECT c.*, NULL::text, NULL::boolean, NULL::timestamptz
            FROM courier.claim(p_limit, p_lease, p_relay, p_fan_out, p_max_claims) AS c;
            IF NOT FOUND THEN
                next_due := courier.next_due();
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            v_claim := false;
        END;
    END IF;
    idle_state := v_state;
    claimed := v_claim;
    RETURN NEXT;  -- the last row: every other output column is NULL
END
$$;
