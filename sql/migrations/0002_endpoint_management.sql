-- 0002: what operators need to manage endpoints and dead letters from the admin API.
--
-- * secret rotation with a grace period: the previous secret keeps signing beside the new one
--   until previous_secret_expires_at, so receivers can switch without dropping a message;
-- * per-endpoint request timeout and custom headers;
-- * endpoints are deleted softly (deleted_at): attempts and dead letters keep pointing at a row
--   that says where they were sent, and the relay can sweep deliveries a concurrent fan-out
--   created just before the delete committed;
-- * a recorded 'discarded' state for dead letters an operator throws away, and for deliveries
--   of a deleted endpoint.

-- Header names are HTTP tokens; values are printable (no CR/LF: no header injection). Names
-- that would let a custom header forge or break the signed request are refused.
CREATE FUNCTION courier.valid_headers(headers jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_typeof(headers) = 'object'
       AND (SELECT count(*) FROM jsonb_object_keys(headers)) <= 20
       AND NOT EXISTS (
           SELECT 1
           FROM jsonb_each(headers) AS h(name, value)
           WHERE h.name !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]{1,100}$'
              OR lower(h.name) IN ('content-type', 'content-length', 'host', 'user-agent',
                                   'transfer-encoding', 'connection')
              OR lower(h.name) LIKE 'webhook-%'
              OR lower(h.name) LIKE 'x-webhook-%'
              OR lower(h.name) LIKE 'x-hub-signature%'
              OR jsonb_typeof(h.value) <> 'string'
              OR length(h.value #>> '{}') > 1000
              OR (h.value #>> '{}') ~ '[[:cntrl:]]'
       )
$$;

COMMENT ON FUNCTION courier.valid_headers(jsonb) IS
    'True when a JSON object of custom headers may be sent: at most 20, token names, printable '
    'string values of at most 1000 characters, none that would override the signature headers.';

ALTER TABLE courier.endpoints
    ADD COLUMN previous_secret text CONSTRAINT endpoint_previous_secret_is_whsec
        CHECK (previous_secret ~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$'),
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD COLUMN timeout_seconds double precision CONSTRAINT endpoint_timeout_in_range
        CHECK (timeout_seconds >= 1 AND timeout_seconds <= 300),
    ADD COLUMN headers jsonb NOT NULL DEFAULT '{}' CONSTRAINT endpoint_headers_valid
        CHECK (courier.valid_headers(headers)),
    ADD COLUMN disabled_reason text,
    ADD COLUMN deleted_at timestamptz,
    ADD CONSTRAINT endpoint_previous_secret_expires
        CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL)),
    -- A deleted endpoint is disabled for good: fan-out and claims only look at enabled ones.
    ADD CONSTRAINT endpoint_deleted_is_disabled CHECK (deleted_at IS NULL OR NOT enabled);

CREATE INDEX endpoints_deleted ON courier.endpoints (deleted_at) WHERE deleted_at IS NOT NULL;

ALTER TABLE courier.deliveries
    DROP CONSTRAINT delivery_status_known,
    ADD CONSTRAINT delivery_status_known
        CHECK (status IN ('pending', 'delivered', 'dead', 'discarded')),
    ADD COLUMN discarded_at timestamptz;

-- Stats, recovery and dead-letter filters per endpoint read only the rows still open, whatever
-- the size of the endpoint's history.
CREATE INDEX deliveries_endpoint_open ON courier.deliveries (endpoint_id, status)
    WHERE status IN ('pending', 'dead');

-- Endpoint stats over a time window: attempts of one endpoint in time order.
CREATE INDEX attempts_endpoint ON courier.attempts (endpoint_id, started_at);
