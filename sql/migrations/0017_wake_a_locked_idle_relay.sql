-- 0017: a producer that finds a relay idle notifies, even when it cannot flip the relay's row.
--
-- Producers notify only relays flagged idle (courier.relays.idle), and flip the flag to busy
-- first, so that one NOTIFY per idle spell reaches the relays (0001). The flip skips rows that
-- another transaction locks, and notified only if it flipped one. But an idle relay's row is
-- locked for a moment by two writers that never notify for this producer:
--   * the relay's heartbeat (every lease / 3, at most 10 s), until it commits;
--   * another producer flipping it, until that producer commits. Its NOTIFY goes out when it
--     commits, and the relay's claim may then run before this producer's commit is visible (the
--     two commits race): the relay finds nothing more, goes idle, and this event is not seen.
-- In both cases the event waited for the relay's poll (poll_interval, 1 s by default): a burst
-- of events committed together at an idle relay lost its second event to the poll now and then.
-- Now a producer that sees an idle relay notifies whether or not it flipped a row. The extra
-- NOTIFYs come only from producers committing in the same moment as a flip, and a relay takes
-- any number of them as one wake-up.
CREATE OR REPLACE FUNCTION courier.outbox_wake() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('courier.wake_checked', true) IS DISTINCT FROM 'on' THEN
        PERFORM set_config('courier.wake_checked', 'on', true);
        IF EXISTS (SELECT 1 FROM courier.relays WHERE idle) THEN
            WITH woken AS (
                SELECT id FROM courier.relays WHERE idle FOR UPDATE SKIP LOCKED
            )
            UPDATE courier.relays AS r SET idle = false FROM woken WHERE r.id = woken.id;
            PERFORM pg_notify('courier_outbox', '');
        END IF;
    END IF;
    RETURN NULL;
END
$$;
