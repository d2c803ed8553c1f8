-- 0021: the relay's hot statements keep one plan per session instead of being planned on
-- every call.
--
-- Postgres plans a prepared statement (and every statement inside a PL/pgSQL function) for its
-- parameters' values five times, then keeps one generic plan if it looks no dearer than those
-- custom plans plus an allowance for planning. With arrays of ids as parameters every custom plan
-- looks cheaper (it knows the array holds 1 or 20 elements, the generic plan guesses 10 or 100),
-- so these statements were planned on every call, and planning a statement of several CTEs
-- costs more than running it. pg_stat_statements at a steady 200 events/s (track_planning on,
-- 20 s, one relay): on 15 the completion was planned on 2,402 of 2,719 calls (0.44 ms a plan,
-- 0.19 ms to run), the fan-out's queue INSERT on 2,949 of 3,811 (0.27 and 0.08), its outbox
-- UPDATE on 3,337 (0.06 and 0.05), the claim's main statement on 2,163 of 3,793 (0.81 and
-- 0.18): a third of the relay's backend time was planning. On 18 the claim kept its generic
-- plan, the others did not (0.38, 0.22, 0.05 ms a plan): over a quarter.
--
-- The generic plans are the ones tests/integration/test_plans.py holds to (no sequential scan of
-- the big tables, no cost near jit_above_cost, with statistics stale or missing, in both
-- plan_cache_modes), and they are the plans these statements already ran with whenever the
-- planner chose them. So the functions that run them say plan_cache_mode = force_generic_plan:
-- a setting of the function's own, in force only while it runs; no cost changes and nothing
-- else in the session is affected. A session still drops its plans every second (the relay's
-- PlanRefresh), so a generic plan is made again for the tables as they are then.
--
-- The completion was a prepared statement of the relay's; it becomes courier.complete_deliveries
-- (PL/pgSQL, which keeps its statements' plans for the session; a SQL function that cannot be
-- inlined is planned again on every call before Postgres 18). The statement is the named query
-- complete_deliveries of sql/queries/claim.sql until now, unchanged but for its parameters'
-- names: see that query's comments (a relay of an earlier version still sends that text; the
-- tables are the same). Returns the ids applied.

ALTER FUNCTION courier.claim(integer, double precision, uuid, integer, integer)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION courier.fan_out(integer) SET plan_cache_mode = force_generic_plan;

CREATE FUNCTION courier.complete_deliveries(
    p_ids bigint[], p_status text[], p_delay float8[], p_code int[], p_error text[],
    p_started timestamptz[], p_relay uuid,
    p_event uuid[], p_endpoint uuid[], p_attempt int[], p_duration float8[], p_body text[],
    p_attempt_error text[]
) RETURNS bigint[]
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    applied bigint[];
BEGIN
    WITH gone AS (
        DELETE FROM courier.queue AS q
        WHERE q.id = ANY (p_ids) AND q.lease_token = p_relay
          AND p_status[array_position(p_ids, q.id)] <> 'pending'
        RETURNING q.*, array_position(p_ids, q.id) AS i
    ), kept AS (
        UPDATE courier.queue AS q
        SET attempts = q.attempts + 1,
            claims = 0,  -- an attempt is recorded: the poison count starts again (0010)
            due_at = now() + make_interval(secs => p_delay[array_position(p_ids, q.id)]),
            lease_token = NULL,
            last_attempt_at = p_started[array_position(p_ids, q.id)],
            last_status_code = p_code[array_position(p_ids, q.id)],
            last_error = p_error[array_position(p_ids, q.id)]
        WHERE q.id = ANY (p_ids) AND q.lease_token = p_relay
          AND p_status[array_position(p_ids, q.id)] = 'pending'
        RETURNING q.id
    ), recorded AS (
        -- Only attempts of deliveries applied here (every other transaction sees them in the
        -- queue until this statement commits, so no pass can prune their event) or whose event
        -- still exists: a relay that lost its lease may report a delivery that another relay
        -- finished and retention has pruned since, and its attempt would then refer to an event
        -- that is gone, which retention (finding attempts through their events) would never
        -- remove. (A pass pruning that very event at this moment can still miss one: it takes a
        -- stale relay and a prune of the same event within the same few milliseconds.) The
        -- outbox is probed only for rows not applied (OR evaluates its arms in order), by a
        -- scalar sub-select: one primary-key probe per row, where an EXISTS may be planned as a
        -- hash of the whole outbox.
        INSERT INTO courier.attempts
            (delivery_id, event_id, endpoint_id, attempt, started_at, duration_ms, status_code,
             response_body, error, outcome)
        SELECT a.delivery_id, a.event_id, a.endpoint_id, a.attempt, a.started_at, a.duration_ms,
               a.status_code, a.response_body, a.error,
               CASE a.status WHEN 'pending' THEN 'retry' ELSE a.status END
        FROM unnest(p_ids, p_event, p_endpoint, p_attempt, p_started,
                    p_duration, p_code, p_body, p_attempt_error, p_status)
            AS a(delivery_id, event_id, endpoint_id, attempt, started_at, duration_ms, status_code,
                 response_body, error, status)
        WHERE a.delivery_id = ANY ((SELECT array_agg(x.id) FROM (
                  SELECT g.id FROM gone AS g UNION ALL SELECT k.id FROM kept AS k) AS x)::bigint[])
           OR (SELECT true FROM courier.outbox AS o WHERE o.id = a.event_id LIMIT 1)
    ), delivered AS (
        INSERT INTO courier.delivery_history
            (id, event_id, endpoint_id, ordering_key, status, attempts, schedule_base,
             next_attempt_at, last_attempt_at, last_status_code, last_error, delivered_at,
             created_at)
        SELECT g.id, g.event_id, g.endpoint_id, g.ordering_key, 'delivered', g.attempts + 1,
               g.schedule_base, now(), p_started[g.i], p_code[g.i],
               p_error[g.i], now(), g.created_at
        FROM gone AS g WHERE p_status[g.i] = 'delivered'
    ), dead AS (
        INSERT INTO courier.dead_letters
            (id, event_id, endpoint_id, ordering_key, attempts, schedule_base, last_attempt_at,
             last_status_code, last_error, created_at)
        SELECT g.id, g.event_id, g.endpoint_id, g.ordering_key, g.attempts + 1, g.schedule_base,
               p_started[g.i], p_code[g.i], p_error[g.i], g.created_at
        FROM gone AS g WHERE p_status[g.i] = 'dead'
    )
    SELECT array_agg(x.id) INTO applied
    FROM (SELECT g.id FROM gone AS g UNION ALL SELECT k.id FROM kept AS k) AS x;
    RETURN applied;
END
$$;
