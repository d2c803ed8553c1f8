-- The relay's hot path: fan-out and claim, completions, attempts, leases, next due time.
-- Named queries: each block starts with a line "-- name --"; the comment lines after it say
-- what it does. Loaded by pgcourier.db.load_queries() from every file in sql/queries/.

-- claim_due --
-- Fan out up to $4 fresh events, then lease up to $1 due deliveries to relay $3 for $2 seconds
-- within every endpoint's policies: one round trip (see courier.claim in migrations 0003 for the
-- rules and why it is a function, 0022 and 0023 for its statements as they are). Deliveries claimed
-- $5 times without an attempt recorded are dead-lettered instead, and come back with
-- poisoned = true (0010).
SELECT * FROM courier.claim($1, $2, $3, $4, $5);

-- fan_out --
-- Fan out up to $1 fresh events without claiming anything; returns how many it took (0 when
-- another relay holds the fan-out lock). For a backlog beyond what claims fan out (see
-- Relay._fan_out_backlog).
SELECT courier.fan_out($1);

-- complete_deliveries --
-- Record a batch of attempts and apply their outcomes, in one statement (so in one implicit
-- transaction, one round trip: a batch used to take four, BEGIN, the attempts, the outcomes,
-- COMMIT). $1 ids, $2 new status, $3 retry delay in seconds (NULL when not retrying), $4 HTTP
-- status codes, $5 errors kept on the delivery, $6 attempt start times, all for relay $7; then
-- for the attempt log $8 event ids, $9 endpoint ids, $10 attempt numbers, $11 durations (ms),
-- $12 response bodies, $13 the attempts' own errors.
-- Every attempt is recorded, even one whose lease was lost (it happened), unless retention has
-- pruned its event meanwhile (see recorded). Only rows still leased
-- to this relay change: if the lease was lost (the relay stalled and another relay took the
-- delivery over), the other relay's outcome wins. A finished delivery leaves the queue for the
-- history or the dead letters; a retry stays, due later. Returns the ids applied.
-- Every row is found by primary key (= ANY) and its values by array_position: no join with
-- unnest(), whose size the planner would have to guess (with missing statistics it chose a
-- nested loop that re-ran the unnest for every row). A function (0021) so that its statement
-- keeps one generic plan per session instead of being planned on every call.
SELECT unnest(courier.complete_deliveries($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13))
    AS id;

-- hold_key_followers --
-- A keyed delivery is waiting for a retry: its key's later deliveries at that endpoint cannot go
-- before it, so move them out of the claim's way until then. $1 endpoint ids, $2 keys, $3 the
-- retrying deliveries' ids, $4 their retry times.
UPDATE courier.queue AS q
SET due_at = greatest(q.due_at, r.until)
FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[])
    AS r(endpoint_id, ordering_key, head_id, until)
WHERE q.endpoint_id = r.endpoint_id AND q.ordering_key = r.ordering_key
  AND q.id > r.head_id AND q.lease_token IS NULL;

-- apply_endpoint_outcomes --
-- What a batch says about each endpoint: circuit, Retry-After pause, 410, continuous failure
-- (see courier.apply_endpoint_outcomes in migration 0003).
SELECT * FROM courier.apply_endpoint_outcomes($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- renew_leases --
-- Push the lease of deliveries $1 held by relay $2 out to now() + $3 seconds. Returns the ids
-- still held; any id missing was taken over by another relay (or finished).
UPDATE courier.queue
SET due_at = now() + make_interval(secs => $3)
WHERE id = ANY($1::bigint[]) AND lease_token = $2
RETURNING id;

-- release_leases --
-- Hand deliveries $1 held by relay $2 back, due at once, for another relay (used on shutdown).
-- Their claim is given back: this relay chose not to send them, it did not die on them (0010).
UPDATE courier.queue
SET due_at = now(), lease_token = NULL, claims = greatest(claims - 1, 0)
WHERE id = ANY($1::bigint[]) AND lease_token = $2;

-- next_due --
-- When the next delivery becomes due at an endpoint that may take it (NULL if none): an endpoint
-- paused by Retry-After or with an open circuit counts from when it opens again. One probe of
-- queue_endpoint_due per enabled endpoint. A function (0020) because going idle reads it too.
SELECT courier.next_due();

-- claim_going_idle --
-- Mark relay $1 (host $2, process $3) idle, waiting up to $4 s for producers' commits in
-- progress and $5 s for its row, then claim as claim_due ($6 limit, $7 lease, $8 fan-out, $9
-- poison bound) and, if that took nothing, read next_due: one round trip (0020; the answers
-- 'settled', 'unsettled', 'held', 'busy' are courier.relay_idle's, 0018 and 0019). The claimed
-- rows, then one row with id NULL: idle_state, claimed (false: claim separately), next_due.
-- (Short: pg_stat_activity shows the first 1,024 bytes of a statement, this comment included.)
SELECT * FROM courier.claim_going_idle($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- hand_back_unopened --
-- Hand deliveries $1 held by relay $2 back, due again in $3 seconds: this relay's keys do not
-- open their endpoint's stored secret (pgcourier.unopened). As release_leases, their claim is
-- given back (the relay chose not to send them), and no attempt is recorded, so neither the
-- poison count nor the endpoint's circuit moves. The delay keeps this relay (and any other
-- without the key) from claiming them again at once; a relay with the key sends them then.
UPDATE courier.queue
SET due_at = now() + make_interval(secs => $3), lease_token = NULL,
    claims = greatest(claims - 1, 0)
WHERE id = ANY($1::bigint[]) AND lease_token = $2;
