-- Retention (issue 12): pruning finished events and old dead letters in small batches, and what a
-- "not found" needs to say whether retention removed the thing. Run by pgcourier.retention under
-- its advisory lock, one batch per short transaction.
-- Named queries: each block starts with a line "-- name --"; the comment lines after it say
-- what it does. Loaded by pgcourier.db.load_queries() from every file in sql/queries/.
--
-- Why no batch can race the hot path into a half state: an event that is fanned out and has no
-- row in the queue and none in the dead letters stays that way for good. Nothing creates a queue
-- row for an event already fanned out except a replay or a recovery, and those move a dead letter
-- into the queue in one statement, so every snapshot sees the delivery in one of the two; history
-- rows and attempts are only written while a delivery is in the queue. So a batch that finds an
-- event in that state, in one statement's snapshot, can remove it with everything that refers to
-- it. The rows it deletes are ones no other statement locks (finished events, history, attempts),
-- so it waits on nobody and nobody waits on it; deleting an event cascades nothing (no foreign key
-- points at the outbox since 0006). Every table is reached by an index and every id list is an
-- array (= ANY), never a join whose size the planner must guess.

-- prune_events --
-- Walk up to $6 events in (created_at, id) order after ($1, $2) and before ($3, $4) exclusive, and
-- delete those whose deliveries have all finished (or that matched no endpoint) with their
-- history rows and attempts; with $5 false nothing is deleted and what would be is counted (a
-- dry run). Events not fanned out yet, with a delivery in the queue or a dead letter are left
-- alone, and (unless dry) recorded in courier.retention_held, due for a look at once: the re-check
-- (lock_due_held, recheck_held) decides, with a fresh snapshot, how long to park them. (Parking
-- them here on what this statement's snapshot saw could lose the wake-up of a letter discarded
-- meanwhile: its trigger finds no row to wake yet.) Returns how many were walked, the last key
-- walked, and what was deleted per table.
WITH walked AS (
    SELECT o.id, o.created_at, o.fanned_out_at
    FROM courier.outbox AS o
    WHERE (o.created_at, o.id) > ($1::timestamptz, $2::uuid)
      AND (o.created_at, o.id) < ($3::timestamptz, $4::uuid)
    ORDER BY o.created_at, o.id
    LIMIT $6
), doomed AS (
    SELECT array_agg(w.id) AS ids
    FROM walked AS w
    WHERE w.fanned_out_at IS NOT NULL
      -- (Both probes by the (event_id, endpoint_id) unique indexes.)
      AND NOT EXISTS (SELECT 1 FROM courier.queue AS q WHERE q.event_id = w.id)
      AND NOT EXISTS (SELECT 1 FROM courier.dead_letters AS d WHERE d.event_id = w.id)
), attempts_gone AS (
    DELETE FROM courier.attempts AS a
    WHERE $5::boolean AND a.event_id = ANY ((SELECT d.ids FROM doomed AS d)::uuid[])
    RETURNING a.id
), history_gone AS (
    DELETE FROM courier.delivery_history AS h
    WHERE $5::boolean AND h.event_id = ANY ((SELECT d.ids FROM doomed AS d)::uuid[])
    RETURNING h.id
), events_gone AS (
    DELETE FROM courier.outbox AS o
    WHERE $5::boolean AND o.id = ANY ((SELECT d.ids FROM doomed AS d)::uuid[])
    RETURNING o.id
), held AS (
    INSERT INTO courier.retention_held (event_id)
    SELECT w.id FROM walked AS w
    WHERE $5::boolean
      AND w.id <> ALL (coalesce((SELECT d.ids FROM doomed AS d), '{}')::uuid[])
    ON CONFLICT (event_id) DO NOTHING
), history_seen AS (
    -- A dry run counts instead, by the same index.
    SELECT count(*) AS n FROM courier.delivery_history AS h
    WHERE NOT $5::boolean AND h.event_id = ANY ((SELECT d.ids FROM doomed AS d)::uuid[])
), attempts_seen AS (
    SELECT count(*) AS n FROM courier.attempts AS a
    WHERE NOT $5::boolean AND a.event_id = ANY ((SELECT d.ids FROM doomed AS d)::uuid[])
), last AS (
    SELECT w.created_at, w.id FROM walked AS w ORDER BY w.created_at DESC, w.id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM walked)::integer AS walked,
       (SELECT l.created_at FROM last AS l) AS last_at,
       (SELECT l.id FROM last AS l) AS last_id,
       CASE WHEN $5 THEN (SELECT count(*) FROM events_gone)
            ELSE coalesce(cardinality((SELECT d.ids FROM doomed AS d)), 0) END::integer AS outbox,
       CASE WHEN $5 THEN (SELECT count(*) FROM history_gone)
            ELSE (SELECT n FROM history_seen) END::integer AS delivery_history,
       CASE WHEN $5 THEN (SELECT count(*) FROM attempts_gone)
            ELSE (SELECT n FROM attempts_seen) END::integer AS attempts,
       (SELECT max(h.id) FROM history_gone AS h) AS max_delivery_id;

-- lock_due_held --
-- The re-check, first statement: lock up to $1 held events due by $4 (when the re-check began:
-- rows it parks again are not seen twice), after the key ($2, $3) (a dry run changes nothing, so
-- it pages on), in (check_at, event_id) order by retention_held_check. Rows a dead-letter trigger
-- is waking right now are skipped: they are due again when it commits.
SELECT h.event_id, h.check_at
FROM courier.retention_held AS h
WHERE h.check_at <= $4::timestamptz AND (h.check_at, h.event_id) > ($2::timestamptz, $3::uuid)
ORDER BY h.check_at, h.event_id
LIMIT $1
FOR UPDATE SKIP LOCKED;

-- recheck_held --
-- The re-check, second statement, in the same transaction: look at held events $1 (locked by
-- lock_due_held) again. Those now finished (or gone) are pruned like prune_events does and
-- forgotten; the others are parked again: held by dead letters only for $5 seconds (the trigger
-- of migration 0012 wakes them as soon as one of their letters leaves), else after as long again
-- as they have been held, at least $3 and at most $4 seconds. With $2 false nothing changes and
-- what would be pruned is counted (a dry run).
-- Why a wake-up is not lost here: this statement's snapshot is taken after the rows are locked. A
-- discard committed before it is seen (its letter gone); one not committed yet must lock the same
-- row to wake it, so it waits for this transaction and then wakes the row parked here.
WITH looked AS (
    SELECT h.event_id, h.held_since, o.present, o.fanned_out_at IS NOT NULL AS fanned,
           EXISTS (SELECT 1 FROM courier.queue AS q WHERE q.event_id = h.event_id) AS queued,
           EXISTS (SELECT 1 FROM courier.dead_letters AS d WHERE d.event_id = h.event_id) AS dead
    FROM courier.retention_held AS h
    -- One primary-key probe per row (a LATERAL ... LIMIT 1 is never a join over the outbox).
    LEFT JOIN LATERAL (
        SELECT true AS present, o.fanned_out_at FROM courier.outbox AS o WHERE o.id = h.event_id
        LIMIT 1
    ) AS o ON true
    WHERE h.event_id = ANY ($1::uuid[])
), doomed AS (
    SELECT array_agg(l.event_id) AS ids
    FROM looked AS l
    WHERE l.present AND l.fanned AND NOT l.queued AND NOT l.dead
), attempts_gone AS (
    DELETE FROM courier.attempts AS a
    WHERE $2::boolean AND a.event_id = ANY ((SELECT d.ids FROM doomed AS d)::uuid[])
    RETURNING a.id
), history_gone AS (
    DELETE FROM courier.delivery_history AS h
    WHERE $2::boolean AND h.event_id = ANY ((SELECT d.ids FROM doomed AS d)::uuid[])
    RETURNING h.id
), events_gone AS (
    DELETE FROM courier.outbox AS o
    WHERE $2::boolean AND o.id = ANY ((SELECT d.ids FROM doomed AS d)::uuid[])
    RETURNING o.id
), forgotten AS (
    DELETE FROM courier.retention_held AS h
    USING looked AS l
    WHERE $2::boolean AND h.event_id = l.event_id
      AND (l.present IS NULL OR (l.fanned AND NOT l.queued AND NOT l.dead))
), parked AS (
    UPDATE courier.retention_held AS h
    SET check_at = CASE
        WHEN l.fanned AND NOT l.queued THEN now() + make_interval(secs => $5::float8)
        ELSE now() + make_interval(secs => least($4::float8, greatest($3::float8,
                 extract(epoch FROM now() - h.held_since)::float8)))
    END
    FROM looked AS l
    WHERE $2::boolean AND h.event_id = l.event_id AND l.present
      AND (NOT l.fanned OR l.queued OR l.dead)
), history_seen AS (
    SELECT count(*) AS n FROM courier.delivery_history AS h
    WHERE NOT $2::boolean AND h.event_id = ANY ((SELECT d.ids FROM doomed AS d)::uuid[])
), attempts_seen AS (
    SELECT count(*) AS n FROM courier.attempts AS a
    WHERE NOT $2::boolean AND a.event_id = ANY ((SELECT d.ids FROM doomed AS d)::uuid[])
)
SELECT CASE WHEN $2 THEN (SELECT count(*) FROM events_gone)
            ELSE coalesce(cardinality((SELECT d.ids FROM doomed AS d)), 0) END::integer AS outbox,
       CASE WHEN $2 THEN (SELECT count(*) FROM history_gone)
            ELSE (SELECT n FROM history_seen) END::integer AS delivery_history,
       CASE WHEN $2 THEN (SELECT count(*) FROM attempts_gone)
            ELSE (SELECT n FROM attempts_seen) END::integer AS attempts,
       (SELECT max(h.id) FROM history_gone AS h) AS max_delivery_id;

-- prune_dead --
-- Walk up to $4 dead letters in (dead_at, id) order after ($1, $2) that died before $3, and delete
-- them with their attempts. A dead letter replayed or discarded meanwhile is skipped (the DELETE
-- finds it gone, or the replay does: whichever is second does nothing). Returns the walk's last
-- key, what was deleted, and the events of the deleted letters (prune_orphaned_events next).
-- The letters are locked as they are walked, skipping any that a discard, replay or recovery has
-- locked: those statements lock several letters each in the order of their own plan, and a
-- DELETE by id list here locked in another order, so the two could deadlock (seen once as a 500
-- from a replay). Skipping, the pass never waits on a letter, so it is never part of a deadlock
-- cycle; a letter skipped is either gone when the other side commits or pruned by a later pass
-- (every pass walks the letters from the start).
WITH walked AS (
    SELECT d.id, d.dead_at
    FROM courier.dead_letters AS d
    WHERE (d.dead_at, d.id) > ($1::timestamptz, $2::bigint) AND d.dead_at < $3
    ORDER BY d.dead_at, d.id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM courier.dead_letters AS d
    WHERE d.id = ANY ((SELECT array_agg(w.id) FROM walked AS w)::bigint[])
    RETURNING d.id, d.event_id
), attempts_gone AS (
    -- By attempts_event; delivery ids are unique, so the pair of lists picks exactly the
    -- deleted letters' attempts.
    DELETE FROM courier.attempts AS a
    WHERE a.event_id = ANY ((SELECT array_agg(g.event_id) FROM gone AS g)::uuid[])
      AND a.delivery_id = ANY ((SELECT array_agg(g.id) FROM gone AS g)::bigint[])
    RETURNING a.id
), last AS (
    SELECT w.dead_at, w.id FROM walked AS w ORDER BY w.dead_at DESC, w.id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM walked)::integer AS walked,
       (SELECT l.dead_at FROM last AS l) AS last_at,
       (SELECT l.id FROM last AS l) AS last_id,
       (SELECT count(*) FROM gone)::integer AS dead_letters,
       (SELECT count(*) FROM attempts_gone)::integer AS attempts,
       (SELECT array_agg(DISTINCT g.event_id) FROM gone AS g) AS event_ids,
       (SELECT max(g.id) FROM gone AS g) AS max_delivery_id;

-- prune_orphaned_events --
-- After prune_dead, in its transaction but a new statement (so that it sees the letters gone):
-- delete events $1 that nothing refers to any more (fanned out, nothing queued or dead, and no
-- history unless the event is older than $2, the retention horizon, in which case its history
-- and attempts go with it).
WITH doomed AS (
    SELECT array_agg(o.id) AS ids
    FROM courier.outbox AS o
    WHERE o.id = ANY ($1::uuid[]) AND o.fanned_out_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM courier.queue AS q WHERE q.event_id = o.id)
      AND NOT EXISTS (SELECT 1 FROM courier.dead_letters AS d WHERE d.event_id = o.id)
      AND (o.created_at < $2::timestamptz
           OR NOT EXISTS (SELECT 1 FROM courier.delivery_history AS h WHERE h.event_id = o.id))
), attempts_gone AS (
    DELETE FROM courier.attempts AS a
    WHERE a.event_id = ANY ((SELECT d.ids FROM doomed AS d)::uuid[])
    RETURNING a.id
), history_gone AS (
    DELETE FROM courier.delivery_history AS h
    WHERE h.event_id = ANY ((SELECT d.ids FROM doomed AS d)::uuid[])
    RETURNING h.id
), events_gone AS (
    DELETE FROM courier.outbox AS o
    WHERE o.id = ANY ((SELECT d.ids FROM doomed AS d)::uuid[])
    RETURNING o.id
)
SELECT (SELECT count(*) FROM events_gone)::integer AS outbox,
       (SELECT count(*) FROM history_gone)::integer AS delivery_history,
       (SELECT count(*) FROM attempts_gone)::integer AS attempts,
       (SELECT max(h.id) FROM history_gone AS h) AS max_delivery_id;

-- retention_state --
-- How far pruning has got (one row; see migration 0011).
SELECT retention_seconds, dead_retention_seconds, events_at, events_id, recheck_at, recheck_id,
       dead_before, max_pruned_delivery_id, last_pass_at
FROM courier.retention;

-- record_retention --
-- Save a pass's progress, in the transaction of the batch it describes: $1 retention, $2 dead
-- retention (seconds), $3/$4 the outbox walk's key, $5/$6 the re-check walk's key (NULL: start
-- over), $7 dead letters removed up to this dead_at (NULL: unchanged), $8 the highest delivery id
-- removed by the batch (NULL: none).
UPDATE courier.retention
SET retention_seconds = $1,
    dead_retention_seconds = $2,
    events_at = $3,
    events_id = $4,
    recheck_at = $5,
    recheck_id = $6,
    dead_before = coalesce($7, dead_before),
    max_pruned_delivery_id = greatest(max_pruned_delivery_id, $8::bigint),
    last_pass_at = now();

-- delivery_whereabouts --
-- Where delivery $1 is now, if anywhere: 'pending', 'dead' or its history status (NULL: nowhere).
SELECT coalesce(
    (SELECT 'pending' FROM courier.queue AS q WHERE q.id = $1),
    (SELECT 'dead' FROM courier.dead_letters AS d WHERE d.id = $1),
    (SELECT h.status FROM courier.delivery_history AS h WHERE h.id = $1)) AS status;

-- table_sizes --
-- Bytes on disk of each of courier's growing tables with their indexes and TOAST, for the
-- /metrics gauges (catalog lookups only; nothing is scanned).
SELECT t.name, pg_total_relation_size(('courier.' || t.name)::regclass) AS bytes
FROM unnest(ARRAY['outbox', 'queue', 'dead_letters', 'delivery_history', 'attempts']) AS t(name);
