-- 0018: a relay marking itself idle waits for the commits of producers that saw it busy.
--
-- A producer checks the relays' idle flags when it commits (courier.outbox_wake, a deferred
-- trigger) and notifies only if one is idle. Its event becomes visible when its commit ends:
-- after the WAL flush, and after a synchronous standby's answer. A relay that finds nothing to
-- claim marks itself idle, then claims once more before it sleeps, for whatever producers that
-- saw it busy committed meanwhile. But a producer that read "busy" just before the flag
-- changed, and whose commit ended just after that last claim began, was seen by neither: its
-- event waited for the poll (poll_interval, 1 s by default). With two events committed a
-- moment apart at an idle relay, the second waited the full poll about once in 25 bursts
-- (Postgres 15, a local disk), and at 1,000 events/s some waited for the next producer's
-- NOTIFY. The window is a commit's duration: a slower disk or a standby widens it.
--
-- Now a producer takes a shared lock (advisory, transaction-scoped) before it reads the flags,
-- and holds it until its commit has ended: locks are released after the transaction becomes
-- visible. A relay marking itself idle takes the same lock exclusively after writing its flag,
-- and commits with it: it waits for every producer that holds it (each is past its check, so
-- may have read "busy"), and the claim that follows sees their events. Producers never wait:
-- they only try the lock, and one that cannot have it (a relay is marking itself idle: its
-- request is granted or queued) notifies without reading the flags. Its NOTIFY goes out when
-- its commit ends, so the relay it wakes sees its event. So every event is either announced
-- or visible to the claim that follows.
--
-- A producer under REPEATABLE READ or SERIALIZABLE reads the flags in the snapshot its
-- transaction began with, which says nothing of now; and flipping a flag row that a relay has
-- written since that snapshot failed its COMMIT with a serialization error (since 0001). Such
-- producers now notify without reading or writing the flags.
--
-- The relay's wait is bounded (courier.relay_idle's p_settle, the relay's IDLE_SETTLE_TIMEOUT):
-- a transaction that holds the lock for long (SET CONSTRAINTS ... IMMEDIATE fires the trigger
-- at the INSERT; a prepared transaction keeps its locks) makes the relay give up, mark itself
-- idle anyway, and not wait for a while (pgcourier.store): the poll covers what it then misses,
-- as before this migration. Whoever holds the lock holds up no producer.
CREATE FUNCTION courier.producers_lock() RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- "courier" in ASCII, in the one-bigint key space of advisory locks (the claim's locks use the
-- two-integer space, which is apart).
RETURN 27988572915721586;

CREATE OR REPLACE FUNCTION courier.outbox_wake() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('courier.wake_checked', true) IS DISTINCT FROM 'on' THEN
        PERFORM set_config('courier.wake_checked', 'on', true);
        IF current_setting('transaction_isolation') <> 'read committed'
           -- Held until this commit has ended; not to be had while a relay marks itself idle.
           OR NOT pg_try_advisory_xact_lock_shared(courier.producers_lock()) THEN
            PERFORM pg_notify('courier_outbox', '');
        ELSIF EXISTS (SELECT 1 FROM courier.relays WHERE idle) THEN
            WITH woken AS (
                SELECT id FROM courier.relays WHERE idle FOR UPDATE SKIP LOCKED
            )
            UPDATE courier.relays AS r SET idle = false FROM woken WHERE r.id = woken.id;
            PERFORM pg_notify('courier_outbox', '');  -- flipped or not (0017)
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- Mark relay p_relay (on host p_hostname, process p_pid) waiting (p_idle) or working, as the
-- named query set_relay_idle did: an upsert, since a crash restart empties the UNLOGGED table.
-- Going idle, then wait up to p_settle seconds for the producers' commits in progress (above).
-- False if that wait gave up (the flag is written all the same).
CREATE FUNCTION courier.relay_idle(
    p_relay uuid, p_idle boolean, p_hostname text, p_pid integer, p_settle double precision
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    -- The flag first: the row lock it may wait for (a producer flipping the flag, until that
    -- producer commits) is then not awaited while holding the lock below.
    INSERT INTO courier.relays AS r (id, hostname, pid, idle)
    VALUES (p_relay, p_hostname, p_pid, p_idle)
    ON CONFLICT (id) DO UPDATE SET idle = excluded.idle, seen_at = now()
    WHERE r.idle IS DISTINCT FROM excluded.idle;
    IF NOT p_idle OR coalesce(p_settle, 0) <= 0 THEN
        RETURN true;
    END IF;
    -- Local to this transaction, which the caller's statement is (autocommit): it ends at once.
    -- (Relays going idle together queue behind each other, each for a moment: what each holds
    -- the lock for is this commit, of an UNLOGGED table, which waits for no WAL flush.)
    PERFORM set_config('lock_timeout', ceil(p_settle * 1000)::bigint || 'ms', true);
    BEGIN
        -- Held to this transaction's end: producers that try it meanwhile notify.
        PERFORM pg_advisory_xact_lock(courier.producers_lock());
    EXCEPTION WHEN lock_not_available THEN
        RETURN false;
    END;
    RETURN true;
END
$$;
