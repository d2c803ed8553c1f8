-- 0015: event ids ordered by time (UUID version 7), so that indexes on them stay bounded.
--
-- Event ids were random (gen_random_uuid, version 4). Every index keyed by an event id then takes
-- its inserts all over its key space, and removes rows all over it too: the queue's
-- (event_id, endpoint_id) index, whose rows live for milliseconds, grew without end in the soak
-- (issue 12: 4.3 -> 7.5 -> 10.1 MB over 12 minutes at 1,000 events/s while the queue held a few
-- dozen rows), because a B-tree page is only given back once every entry on it is gone, and with
-- random keys new entries keep landing on every page. The queue's primary key (a sequence) over
-- the same rows stayed at 2.2 MB. With ids that grow with time, new entries go to the right edge
-- and pages on the left empty out whole and are recycled; pruning (retention) deletes a run of
-- neighbouring entries rather than one per page in the outbox, history and attempts indexes.
--
-- A version 7 UUID (RFC 9562): 48 bits of Unix milliseconds, the version, 12 bits of
-- sub-millisecond time (method 3 of the RFC: ids of one session come out in order), the variant
-- and 62 random bits (kept from gen_random_uuid, whose variant bits are the same). Still a UUID:
-- nothing that stores, sends or compares event ids changes; nothing may read order into them
-- (ids of different sessions in the same microsecond, or across a clock step, may come in any
-- order), and nothing here does (fan-out follows seq, listings (created_at, id)).
-- Postgres 18 has uuidv7() built in (also method 3); 14 to 17 use this function, ~1 us per id
-- more than gen_random_uuid on 15 (200,000 ids: 0.42 s against 0.23 s).

CREATE FUNCTION courier.uuidv7() RETURNS uuid
LANGUAGE plpgsql VOLATILE PARALLEL SAFE AS $$
DECLARE
    us constant bigint := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
BEGIN
    -- (ms << 16) | version 7 | the microseconds within the millisecond scaled to 12 bits.
    RETURN encode(int8send(((us / 1000) << 16) | x'7000'::integer | ((us % 1000) * 4096 / 1000))
                  || substring(uuid_send(gen_random_uuid()) FROM 9), 'hex')::uuid;
END
$$;

COMMENT ON FUNCTION courier.uuidv7() IS
    'A time-ordered UUID (version 7): the default of courier.outbox.id where Postgres has no '
    'uuidv7() of its own (before 18).';

DO $$
BEGIN
    IF to_regprocedure('pg_catalog.uuidv7()') IS NOT NULL THEN
        ALTER TABLE courier.outbox ALTER COLUMN id SET DEFAULT pg_catalog.uuidv7();
    ELSE
        ALTER TABLE courier.outbox ALTER COLUMN id SET DEFAULT courier.uuidv7();
    END IF;
END
$$;

-- A column default runs with the inserting role's rights, so every role that may INSERT an event
-- must be able to call it (the README's producer role has INSERT on the outbox and no more):
-- EXECUTE for PUBLIC, harmless for a function that reads and writes nothing. (The migrator's
-- revoke_public_execute, run after every migration, leaves this one grant in place.)
GRANT EXECUTE ON FUNCTION courier.uuidv7() TO PUBLIC;
