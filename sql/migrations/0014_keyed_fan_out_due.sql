-- 0014: a keyed delivery fanned out behind one that waits for a retry is not due before it.
--
-- An endpoint's ordering key whose first delivery keeps failing holds the rest of the key back.
-- When that delivery's retry is recorded, hold_key_followers (sql/queries/claim.sql) moves the
-- key's later deliveries out of the claim's way, due with it; but deliveries fanned out after
-- that were due at once, so every claim walked them (each one checked against the older rows of
-- its key and skipped) until the next retry moved them too: with 2,000 events on one blocked
-- key, every other endpoint's idle latency rose by 7.5 ms p50 on 18 (issue 10, isolation). The
-- fan-out now gives such a delivery its key head's due time. Nothing else changes: fan_out of
-- 0013 with its INSERT reshaped (the key computed once, then the due time from it).

CREATE OR REPLACE FUNCTION courier.fan_out(p_fan_out integer) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    fresh uuid[];
BEGIN
    IF NOT pg_try_advisory_xact_lock(1668247919, 0) THEN
        RETURN 0;
    END IF;
    SELECT array_agg(o.id ORDER BY o.seq) INTO fresh
    FROM (
        SELECT o.id, o.seq
        FROM courier.outbox AS o
        WHERE o.fanned_out_at IS NULL
        ORDER BY o.seq
        LIMIT p_fan_out
        -- No row lock: the advisory lock keeps relays apart, and skipping rows that other
        -- transactions lock would let a later event of their key go first (see 0004).
    ) AS o;
    IF fresh IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE courier.outbox AS o SET fanned_out_at = now() WHERE o.id = ANY (fresh);
    INSERT INTO courier.queue (event_id, endpoint_id, ordering_key, due_at)
    SELECT f.event_id, f.endpoint_id, f.ordering_key,
           -- (0014) Behind its key's first delivery at that endpoint, when that one waits for
           -- a retry (not leased, due later): due when it is, as hold_key_followers does for
           -- the deliveries queued before the retry was scheduled. One probe of the key's
           -- index per keyed delivery (its first entry; never the whole key).
           CASE WHEN f.ordering_key IS NULL THEN now()
                ELSE greatest(now(), (
                    SELECT CASE WHEN h.lease_token IS NULL THEN h.due_at END
                    FROM courier.queue AS h
                    WHERE h.endpoint_id = f.endpoint_id AND h.ordering_key = f.ordering_key
                    ORDER BY h.id
                    LIMIT 1)) END
    FROM (
        SELECT o.id AS event_id, ep.id AS endpoint_id, o.seq,
               CASE WHEN o.tenant IS NOT NULL THEN o.tenant || chr(31) || o.ordering_key
                    WHEN strpos(o.ordering_key, chr(31)) > 0 THEN chr(31) || o.ordering_key
                    ELSE o.ordering_key END AS ordering_key
        FROM courier.outbox AS o
        JOIN courier.endpoints AS ep
          ON ep.deleted_at IS NULL
         AND (ep.tenant IS NULL OR ep.tenant = o.tenant)
         AND (ep.id = o.endpoint_id
              OR (o.endpoint_id IS NULL AND ep.created_at <= o.created_at
                  AND o.event_type LIKE ANY (ep.like_patterns)))
        WHERE o.id = ANY (fresh)
    ) AS f
    -- Ids follow the events' order: the claim's key check relies on it.
    ORDER BY f.seq, f.endpoint_id;
    RETURN cardinality(fresh);
END
$$;

-- New functions of this migration: as 0005, EXECUTE for the owner only.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA courier FROM PUBLIC;
