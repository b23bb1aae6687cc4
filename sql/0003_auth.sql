-- Tenants and API tokens. Every wallet belongs to the tenant whose token created it; wallets
-- created before this migration, or with authentication turned off, belong to 'default'.
ALTER TABLE wallets ADD COLUMN tenant text NOT NULL DEFAULT 'default';

-- Only a SHA-256 of each token is kept: the token itself is shown once, when created.
CREATE TABLE api_tokens (
    id          uuid PRIMARY KEY,
    tenant      text        NOT NULL,
    name        text        NOT NULL,
    scopes      text[]      NOT NULL CHECK (scopes <@ ARRAY['read', 'write'] AND cardinality(scopes) > 0),
    token_hash  bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
