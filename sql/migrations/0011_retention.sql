-- 0011: retention (issue 12, part 1): how far pruning has got, so that a pass resumes where the
-- last one stopped and a "not found" can say whether retention may have removed the thing.
--
-- Pruning itself is batched DELETEs (sql/queries/retention.sql, pgcourier/retention.py), not
-- time partitions: partitioning the outbox would turn its primary key into (id, created_at), make
-- the idempotency key unique per partition only, and make every by-id probe (the claim reads
-- each leased delivery's event by id) visit every partition: measured 2.3 ms against 0.4 ms for
-- 100 ids over 20 daily partitions. Deleting costs ~15-30 us per event with its two deliveries
-- and two attempts (30,000-60,000 events/s on one core), 2-3 % of a core at 1,000 events/s.
--
-- Nothing else is needed: every lookup a pass makes has an index already (outbox_created for the
-- walk, the (event_id, endpoint_id) unique indexes of queue, dead_letters and delivery_history,
-- attempts_event, dead_letters_dead_at), and no foreign key points at the outbox any more (0006
-- dropped the history's), so deleting an event cascades nothing.

-- With retention, the history and the attempts lose as many rows as they gain: vacuum them after
-- 5 % of their rows are dead rather than the default 20 %, so that space freed by pruning is
-- reused before the tables grow (the outbox vacuums at 2 % already, 0001).
ALTER TABLE courier.delivery_history SET (autovacuum_vacuum_scale_factor = 0.05);
ALTER TABLE courier.attempts SET (autovacuum_vacuum_scale_factor = 0.05);

-- One row. Written only by the pass that holds the pruning lock (see retention.py), once per
-- batch, in the batch's own transaction: what it says is always what has been committed.
CREATE TABLE courier.retention (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- The settings of the last pass, so that a "not found" can name them without the reader
    -- knowing the relay's settings (NULL: never pruned).
    retention_seconds double precision,
    dead_retention_seconds double precision,
    -- The walk of the outbox in (created_at, id) order has passed this key: every event before it
    -- whose deliveries had all finished when it was walked is gone. Events held then (pending, a
    -- dead letter, not fanned out yet) stay behind it and are looked at again by the slower
    -- re-check walk below.
    events_at timestamptz,
    events_id uuid,
    -- Where the re-check walk of events behind (events_at, events_id) stands (NULL: at the start).
    recheck_at timestamptz,
    recheck_id uuid,
    -- Dead letters that died before this have been removed.
    dead_before timestamptz,
    -- The highest delivery id removed so far (from the history or the dead letters): a delivery
    -- id at or below it that is found nowhere may have been pruned.
    max_pruned_delivery_id bigint,
    last_pass_at timestamptz
);
INSERT INTO courier.retention DEFAULT VALUES;

COMMENT ON TABLE courier.retention IS
    'How far retention (PGCOURIER_RETENTION, PGCOURIER_DEAD_RETENTION) has pruned; one row.';
