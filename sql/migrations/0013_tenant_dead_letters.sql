-- 0013: a tenant's dead letters by index, and per-tenant ordering keys that cannot collide
-- (issue 13, with issue 10's rule that plans hold at any statistics).
--
-- * Dead letters carry their event's tenant. Listing, counting, replaying or discarding one
--   tenant's dead letters used to look each dead letter's event up in the outbox and filter
--   there: the cost was every dead letter, whichever tenant had them. With the tenant on the row
--   and an index in the listings' order (dead_at, id), a tenant's page costs its own rows.
--   The tenant is filled by a trigger, so every path that moves a delivery to the dead letters
--   (the relay's completions, the claim's poison rule, later ones) fills it without knowing.
-- * Ordering keys per tenant are tenant || chr(31) || key (0007). No tenant contains chr(31), so
--   that is unambiguous among tenants; but an event without a tenant kept its key as it was, and
--   a key such as 'acme' || chr(31) || 'order-1' then shared its order with tenant acme's
--   'order-1' at an endpoint taking both. See courier.fan_out below.

-- Metadata only: no rewrite of the table.
ALTER TABLE courier.dead_letters ADD COLUMN tenant text;

-- Backfill the dead letters of before this migration from their events, a range of ids at a
-- time: each statement reads its dead letters by primary key and their events by the outbox's
-- primary key, whatever the statistics say, and the same statement can be run in batches by
-- hand on a database too large to backfill in one transaction. Rows whose event has no tenant
-- stay NULL, and are not rewritten.
DO $$
DECLARE
    low bigint;
    high bigint;
    step constant bigint := 10000;
BEGIN
    SELECT min(d.id), max(d.id) INTO low, high FROM courier.dead_letters AS d;
    WHILE low <= high LOOP
        UPDATE courier.dead_letters AS d
        SET tenant = o.tenant
        FROM courier.outbox AS o
        WHERE d.id >= low AND d.id < low + step
          AND o.id = d.event_id AND o.tenant IS NOT NULL AND d.tenant IS NULL;
        low := low + step;
    END LOOP;
END
$$;

-- A tenant's dead letters newest first: list_tenant_dead walks it backwards from its cursor.
-- Partial: dead letters without a tenant are not in it.
CREATE INDEX dead_letters_tenant ON courier.dead_letters (tenant, dead_at, id)
    WHERE tenant IS NOT NULL;

-- The event's tenant, for a dead letter written without one: one primary-key probe of the
-- outbox per dead letter (dead letters are the rare outcome). Runs with the writer's rights: the
-- roles that write dead letters (the relay's, the admin's) read the outbox anyway.
CREATE FUNCTION courier.dead_letter_tenant() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT o.tenant INTO NEW.tenant FROM courier.outbox AS o WHERE o.id = NEW.event_id;
    RETURN NEW;
END
$$;

CREATE TRIGGER dead_letter_tenant
    BEFORE INSERT ON courier.dead_letters
    FOR EACH ROW WHEN (NEW.tenant IS NULL)
    EXECUTE FUNCTION courier.dead_letter_tenant();

-- fan_out of 0007 with the queue's ordering key made unambiguous. The key is
--   tenant || chr(31) || key          for an event with a tenant (as in 0007),
--   key                               for one without, when the key holds no chr(31) (as in 0007),
--   chr(31) || key                    for one without, when it does.
-- The three forms cannot meet: the first has a non-empty text before its first chr(31) (a
-- tenant is 1-255 characters without control characters), the third an empty one, the second
-- no chr(31) at all; and each is one-to-one. Keys were not refused instead: a key that a
-- producer's transaction could commit yesterday must not roll that transaction back today, and
-- the rows already queued (no chr(31) in practice) keep their key, so order holds across the
-- upgrade.
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
    INSERT INTO courier.queue (event_id, endpoint_id, ordering_key)
    SELECT o.id, ep.id,
           CASE WHEN o.tenant IS NOT NULL THEN o.tenant || chr(31) || o.ordering_key
                WHEN strpos(o.ordering_key, chr(31)) > 0 THEN chr(31) || o.ordering_key
                ELSE o.ordering_key END
    FROM courier.outbox AS o
    JOIN courier.endpoints AS ep
      ON ep.deleted_at IS NULL
     AND (ep.tenant IS NULL OR ep.tenant = o.tenant)
     AND (ep.id = o.endpoint_id
          OR (o.endpoint_id IS NULL AND ep.created_at <= o.created_at
              AND o.event_type LIKE ANY (ep.like_patterns)))
    WHERE o.id = ANY (fresh)
    -- Ids follow the events' order: the claim's key check relies on it.
    ORDER BY o.seq, ep.id;
    RETURN cardinality(fresh);
END
$$;

-- New functions of this migration: as 0005, EXECUTE for the owner only.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA courier FROM PUBLIC;

ANALYZE courier.dead_letters;
