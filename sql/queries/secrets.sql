-- Secrets at rest: encrypting endpoints' stored secrets and Slack tokens, and rotating keys
-- (pgcourier.secrets_at_rest). Not on any hot path: run at start-up and by `pgcourier keys`.
-- Named queries: each block starts with a line "-- name --"; the comment lines after it say
-- what it does. Loaded by pgcourier.db.load_queries() from every file in sql/queries/.

-- secrets_table_exists --
-- Whether there is anything to check yet (a relay may start before `pgcourier migrate` ran).
SELECT to_regclass('courier.endpoints') IS NOT NULL;

-- lock_stored_secrets --
-- One re-encryption at a time across every relay and command (several relays starting at once
-- each run it): the others wait, then find the work done. Transaction-scoped; a one-bigint key,
-- which never meets the claim's two-integer locks.
SELECT pg_advisory_xact_lock(7090755365234304);

-- stored_secrets --
-- Every endpoint's stored secrets and token, deleted ones included (a backup holds those too),
-- locked until the transaction ends so that no change lands between reading and writing them.
SELECT id, secret, previous_secret, slack_token
FROM courier.endpoints
ORDER BY id
FOR UPDATE;

-- write_stored_secrets --
-- Store re-encrypted values: $1 endpoint ids, $2 secrets, $3 previous secrets, $4 tokens.
-- updated_at is left alone: the endpoint's settings did not change.
UPDATE courier.endpoints AS ep
SET secret = s.secret, previous_secret = s.previous_secret, slack_token = s.slack_token
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
    AS s(id, secret, previous_secret, slack_token)
WHERE ep.id = s.id;

-- endpoint_stored_secrets --
-- Endpoint $1's stored secrets, for checking them against a new signature scheme.
SELECT secret, previous_secret FROM courier.endpoints WHERE id = $1 AND deleted_at IS NULL;

-- latest_sealed_secret --
-- One encrypted stored value, for a writer to check its keys against before it writes (see
-- pgcourier.secrets_at_rest.seal_for_writing): the most recently changed endpoint's, the one
-- most likely under the key in use now. NULL when nothing is encrypted. The endpoints table is
-- small and this runs once per admin write, never on the relay's path.
SELECT ep.id, s.stored
FROM courier.endpoints AS ep
CROSS JOIN LATERAL (VALUES (ep.secret), (ep.previous_secret), (ep.slack_token)) AS s(stored)
WHERE s.stored LIKE 'enc:%'
ORDER BY ep.updated_at DESC, ep.id
LIMIT 1;
