-- 0019: no relay waits for long on a relay's row in courier.relays.
--
-- A producer that finds a relay idle flips its flag to busy (courier.outbox_wake) and holds
-- that row's lock until it commits. The wake-up trigger is deferred, so that is the length of
-- a commit; but a transaction that ran SET CONSTRAINTS ALL IMMEDIATE (or named the trigger)
-- fires it at its INSERT, and holds the row for the rest of the transaction, however long. Until
-- now everything that writes the row waited for it: the relay marking itself idle (its claim
-- loop stopped: events committed meanwhile waited for that transaction to end), its heartbeat
-- (its lease keeper stopped: its leases ran out after a minute and other relays sent its
-- deliveries again), and every other relay's reaper once the row looked stale (their lease
-- keepers stopped too).
--
-- Now:
-- * going idle waits up to p_row_wait seconds for the row, never longer. Past that, if the
--   committed flag already says idle ('held'), the flag says what the relay wants whoever holds
--   the row: a producer flipping it notifies when it commits, and producers that commit
--   meanwhile find the row locked and notify (0017). The relay counts itself idle. The
--   producers' lock of 0018 is not awaited then: a producer that read "busy" did so before the
--   committed "idle", which the relay settled when it wrote it. If the committed flag says busy
--   ('busy'), the holder may still be a producer (one whose FOR UPDATE SKIP LOCKED locked the
--   row just as another producer's flip to busy committed: the recheck drops the row, the lock
--   stays to its end) and producers that read "busy" do not notify: the relay is not idle and
--   tries again shortly (pgcourier.relay), claiming in between, as a poll at a short interval.
-- * the heartbeat skips a locked row (it is refreshed at the next one) and still tells a row
--   that is there from one that is gone (a crash restart empties the UNLOGGED table);
-- * the reaper skips locked rows (a row a producer is flipping belongs to a relay being woken)
--   and never removes the caller's own.
--
-- The five-argument courier.relay_idle of 0018 stays for relays of the previous version during
-- a rolling upgrade.
CREATE FUNCTION courier.relay_idle(
    p_relay uuid, p_idle boolean, p_hostname text, p_pid integer, p_settle double precision,
    p_row_wait double precision
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    -- Local to this transaction, which the caller's statement is (autocommit): it ends at once.
    PERFORM set_config('lock_timeout', greatest(ceil(p_row_wait * 1000), 1)::bigint || 'ms', true);
    BEGIN
        -- The flag first: the row lock it may wait for is then not awaited while holding the
        -- producers' lock below.
        INSERT INTO courier.relays AS r (id, hostname, pid, idle)
        VALUES (p_relay, p_hostname, p_pid, p_idle)
        ON CONFLICT (id) DO UPDATE SET idle = excluded.idle, seen_at = now()
        WHERE r.idle IS DISTINCT FROM excluded.idle;
    EXCEPTION WHEN lock_not_available THEN
        -- (A table lock can time out too: autovacuum truncating the table, DDL. The read below
        -- must not, so the session's own lock_timeout is back first.)
        PERFORM set_config('lock_timeout', v_lock_timeout, true);
        IF (SELECT r.idle FROM courier.relays AS r WHERE r.id = p_relay) IS NOT DISTINCT FROM p_idle
        THEN
            RETURN 'held';
        END IF;
        RETURN 'busy';
    END;
    IF NOT p_idle OR coalesce(p_settle, 0) <= 0 THEN
        RETURN 'settled';
    END IF;
    -- As in 0018: wait up to p_settle for the producers that hold their lock (each may have
    -- read the flag busy); held to this transaction's end, so producers that try it meanwhile
    -- notify. (Relays going idle together queue behind each other, each for a moment: what each
    -- holds the lock for is this commit, of an UNLOGGED table, which waits for no WAL flush.)
    PERFORM set_config('lock_timeout', ceil(p_settle * 1000)::bigint || 'ms', true);
    BEGIN
        PERFORM pg_advisory_xact_lock(courier.producers_lock());
    EXCEPTION WHEN lock_not_available THEN
        RETURN 'unsettled';
    END;
    RETURN 'settled';
END
$$;
