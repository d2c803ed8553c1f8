-- Relay liveness (courier.relays), wake-ups, the queue's vacuum fallback, metric gauges.
-- Named queries: each block starts with a line "-- name --"; the comment lines after it say
-- what it does. Loaded by pgcourier.db.load_queries() from every file in sql/queries/.

-- register_relay --
-- Announce relay $1 (or refresh it after the UNLOGGED table was emptied by a crash restart).
INSERT INTO courier.relays (id, hostname, pid, idle)
VALUES ($1, $2, $3, false)
ON CONFLICT (id) DO UPDATE SET seen_at = now(), idle = false;

-- heartbeat_relay --
-- Refresh relay $1's liveness; false when the row is gone (then register again). A row that
-- another transaction holds is skipped, not waited for: a producer flipping it to busy holds it
-- to its own commit, which may be long (0019); this heartbeat is refreshed at the next one.
-- A skipped row still counts as there (the plain read sees the committed row).
WITH touched AS (
    UPDATE courier.relays AS r SET seen_at = now()
    FROM (SELECT id FROM courier.relays WHERE id = $1 FOR UPDATE SKIP LOCKED) AS free
    WHERE r.id = free.id
    RETURNING r.id
)
SELECT EXISTS (SELECT 1 FROM touched) OR EXISTS (SELECT 1 FROM courier.relays WHERE id = $1);

-- reap_relays --
-- Forget relays not seen for $1 seconds (killed without a goodbye) so producers stop
-- notifying on their behalf; never relay $2, the caller (its heartbeat may have skipped its
-- own row, above). Rows another transaction holds are skipped, not waited for: a producer
-- flipping one to busy holds it to its own commit, which may be long (0019).
DELETE FROM courier.relays
WHERE id IN (
    SELECT id FROM courier.relays
    WHERE seen_at < now() - make_interval(secs => $1) AND id IS DISTINCT FROM $2::uuid
    FOR UPDATE SKIP LOCKED
);

-- queue_vacuum_due --
-- True when courier.queue holds over $1 dead row versions, no vacuum ran on it in the last $2
-- seconds and this role may vacuum it (its owner's): the relay's fallback for servers that run
-- without autovacuum (every delivery leaves one dead row in the queue; unvacuumed, the small hot
-- table would grow by every delivery made). A role that may not would only get a warning.
SELECT s.n_dead_tup > $1
       AND coalesce(greatest(s.last_vacuum, s.last_autovacuum)
                    < now() - make_interval(secs => $2), true)
       AND pg_has_role(c.relowner, 'MEMBER')
FROM pg_stat_user_tables AS s
JOIN pg_class AS c ON c.oid = s.relid
WHERE s.relid = 'courier.queue'::regclass;

-- vacuum_queue --
-- Outside a transaction (VACUUM cannot run in one); SKIP_LOCKED: never wait behind another.
VACUUM (SKIP_LOCKED) courier.queue;

-- deregister_relay --
DELETE FROM courier.relays WHERE id = $1;

-- wake_relays --
-- Wake every listening relay, e.g. after a replay made deliveries due.
SELECT pg_notify('courier_outbox', '');

-- delivery_gauges --
-- One cheap query per scrape, whatever the history: counts of the queue and the dead letters
-- (tables of the work in progress); the oldest pending event is the first unfanned one
-- (outbox_pending, in seq order) or the event of the oldest queued delivery (ids follow the
-- events' order), whichever is older: each a probe, never a min() over the outbox.
SELECT
    (SELECT count(*) FROM courier.queue) AS pending,
    (SELECT count(*) FROM courier.dead_letters) AS dead,
    (SELECT count(*) FROM courier.endpoints
     WHERE circuit_state <> 'closed' AND deleted_at IS NULL) AS open_circuits,
    extract(epoch FROM now() - least(
        (SELECT o.created_at FROM courier.outbox AS o
         WHERE o.fanned_out_at IS NULL ORDER BY o.seq LIMIT 1),
        (SELECT o.created_at
         FROM (SELECT q.event_id FROM courier.queue AS q ORDER BY q.id LIMIT 1) AS q
         CROSS JOIN LATERAL (
             SELECT o.created_at FROM courier.outbox AS o WHERE o.id = q.event_id LIMIT 1
         ) AS o)
    ))::float8 AS oldest_pending_age;
