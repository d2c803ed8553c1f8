-- 0012: retention remembers the events it had
-- to leave behind, and why, so that a pass costs what can be pruned, not what is held.
--
-- Until now events held when the walk passed them (a dead letter kept for DEAD_RETENTION, a
-- delivery still pending, not fanned out yet) stayed behind the walk in the outbox, and a second
-- walk went over all of them again, ~2,000 a pass: with many dead letters it took ever more passes
-- to come back to an event whose letter had meanwhile been discarded, and the tables grew. Now the
-- walk records each held event here, with when it is worth looking at again:
--
-- * held by dead letters only: a dead letter leaves only by a DELETE (discard, replay, recovery,
--   pruning), and the trigger below makes its event due at once; by the clock only rarely (a day,
--   see pgcourier.retention), as a backstop for a wake-up lost to a discard that was still
--   uncommitted while the event was first recorded here (the trigger found no row to wake then);
-- * held by a pending delivery or not fanned out yet: after as long again as it has been held
--   (doubling), between the pass interval and a cap (see pgcourier.retention), since completions
--   are the hot path and must not pay for retention.
--
-- A pass looks only at rows due now (retention_held_check): what it finds prunable it prunes and
-- forgets here, the rest it parks again. Rows are written by the pass holding the pruning lock and
-- by the trigger; see sql/queries/retention.sql for why the two cannot lose a wake-up.
CREATE TABLE courier.retention_held (
    event_id uuid PRIMARY KEY,
    held_since timestamptz NOT NULL DEFAULT now(),
    check_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX retention_held_check ON courier.retention_held (check_at, event_id);

COMMENT ON TABLE courier.retention_held IS
    'Events retention had to keep (a dead letter, a pending delivery), and when to look again.';

-- Dead letters leaving (any statement, any role): their events are due for a look at once. The
-- rows are locked first (in event order, so two bulk discards sharing events wait for each other
-- instead of deadlocking here), so a re-check parking one right now is waited for and its
-- parking then overridden. Not on the hot path: relays never delete dead letters.
CREATE FUNCTION courier.retention_wake() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE courier.retention_held AS h
    SET check_at = least(h.check_at, now())
    FROM (
        SELECT l.event_id
        FROM courier.retention_held AS l
        WHERE l.event_id = ANY (ARRAY(SELECT DISTINCT g.event_id FROM gone AS g))
        ORDER BY l.event_id
        FOR UPDATE OF l
    ) AS locked
    WHERE h.event_id = locked.event_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER dead_letters_wake_retention AFTER DELETE ON courier.dead_letters
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION courier.retention_wake();

-- Events an earlier version's walk already left behind: looked at by the next passes.
-- (courier.retention's recheck_at/recheck_id are no longer used.)
INSERT INTO courier.retention_held (event_id, held_since, check_at)
SELECT o.id, now(), now()
FROM courier.outbox AS o, courier.retention AS r
WHERE r.events_at IS NOT NULL AND (o.created_at, o.id) <= (r.events_at, r.events_id);
