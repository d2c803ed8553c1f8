-- 0010: endpoint secrets and Slack tokens may be stored encrypted (issue 12, part 3).
--
-- With PGCOURIER_SECRET_KEY set, pgcourier stores secret, previous_secret and slack_token as
-- "enc:v1:" + a Fernet token (see pgcourier.sealing); the first start with a key encrypts the
-- plain rows. The database cannot read an encrypted value, so the checks of a value's form
-- (whsec_ for the standard scheme, printable for the others, xox?- for tokens) apply to plain
-- values only; pgcourier checks a value in Python before it encrypts it, and again, decrypted,
-- when an endpoint's signature scheme changes. An encrypted value must at least have the
-- sealed form, so nothing else slips past the checks. No new column, no rewrite: the new
-- constraints are checked once against the (small) endpoints table.

ALTER TABLE courier.endpoints
    DROP CONSTRAINT endpoint_secret_fits_scheme,
    ADD CONSTRAINT endpoint_secret_fits_scheme CHECK (
        (secret ~ '^enc:v1:[A-Za-z0-9_-]+=*$'
         OR CASE WHEN signature_scheme = 'standard'
                 THEN secret ~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$'
                 -- (Postgres regexes repeat at most 255 times: the length is checked apart.)
                 ELSE secret ~ '^[[:print:]]{16,}$' AND length(secret) <= 500
            END)
        AND (previous_secret IS NULL
             OR previous_secret ~ '^enc:v1:[A-Za-z0-9_-]+=*$'
             OR CASE WHEN signature_scheme = 'standard'
                     THEN previous_secret ~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$'
                     ELSE previous_secret ~ '^[[:print:]]{16,}$'
                          AND length(previous_secret) <= 500
                END)),
    DROP CONSTRAINT endpoint_slack_token_valid,
    ADD CONSTRAINT endpoint_slack_token_valid
        CHECK (slack_token ~ '^xox[a-z]-[A-Za-z0-9-]{8,}$'
               OR slack_token ~ '^enc:v1:[A-Za-z0-9_-]+=*$');
