-- Wallets, their journal, the operations that changed them, and the consumer positions that
-- make applying a batch exactly-once.

CREATE TABLE wallets (
    id          uuid PRIMARY KEY,
    currency    text        NOT NULL,
    -- Unconstrained numeric never rounds; amounts are bounded by the API instead.
    balance     numeric     NOT NULL DEFAULT 0 CHECK (balance >= 0),
    version     bigint      NOT NULL DEFAULT 0 CHECK (version >= 0),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- One row per operation taken from the topic, processed or failed. The primary key is what
-- makes a redelivered operation a no-op. No foreign key on wallet_id: an operation naming a
-- missing wallet is recorded as FAILED.
CREATE TABLE operations (
    id            uuid PRIMARY KEY,
    wallet_id     uuid        NOT NULL,
    type          text        NOT NULL CHECK (type IN ('DEPOSIT', 'WITHDRAW', 'TRANSFER')),
    amount        numeric     NOT NULL CHECK (amount > 0),
    to_wallet_id  uuid,
    status        text        NOT NULL CHECK (status IN ('PROCESSED', 'FAILED')),
    reason        text,
    balance_after numeric,
    fingerprint   text        NOT NULL,
    partition     integer     NOT NULL,
    "offset"      bigint      NOT NULL,
    accepted_at   timestamptz NOT NULL,
    processed_at  timestamptz NOT NULL
);

-- The append-only journal: a wallet's balance is the sum of its deltas and its versions are
-- gapless. Failed operations write a zero delta so history and versions cover them too.
CREATE TABLE entries (
    wallet_id     uuid    NOT NULL REFERENCES wallets (id),
    version       bigint  NOT NULL CHECK (version > 0),
    operation_id  uuid    NOT NULL REFERENCES operations (id),
    delta         numeric NOT NULL,
    balance_after numeric NOT NULL CHECK (balance_after >= 0),
    PRIMARY KEY (wallet_id, version)
);

CREATE TABLE consumer_offsets (
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (topic, partition)
);

-- Records that could not be turned into an operation, kept with their position and reason.
CREATE TABLE dead_letters (
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    reason      text        NOT NULL,
    payload     bytea,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
);
