-- Holds: funds a HOLD reserves on its wallet until a CAPTURE takes them, a VOID releases
-- them or they expire. A wallet's `held` is the sum of what its open holds still reserve;
-- what it may spend is its balance less that, down to minus its overdraft limit. Every
-- statement checks before it changes anything, so running the file again changes nothing.

CREATE TABLE IF NOT EXISTS holds (
    tenant      text        NOT NULL,
    -- The HOLD's operation id.
    hold_id     uuid        NOT NULL,
    -- No foreign key to the wallet: the batch that writes a hold has just locked its wallet,
    -- and a per-row trigger would look it up again (see 0008_entry_foreign_keys.sql).
    wallet_id   uuid        NOT NULL,
    -- The wallet's partition, so a worker finds the expired holds of the partitions it owns.
    partition   integer     NOT NULL,
    -- The wallet's version after the HOLD: the list route's stable order and cursor.
    version     bigint      NOT NULL,
    amount      numeric     NOT NULL CHECK (amount > 0),
    captured    numeric     NOT NULL DEFAULT 0,
    state       text        NOT NULL CHECK (state IN ('OPEN', 'CAPTURED', 'VOIDED', 'EXPIRED')),
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    closed_at   timestamptz,
    PRIMARY KEY (tenant, hold_id),
    CHECK (captured >= 0 AND captured <= amount),
    CHECK ((state = 'OPEN') = (closed_at IS NULL))
);
-- The expiry scan: the open holds of some partitions whose time is up, soonest first.
CREATE INDEX IF NOT EXISTS holds_open_expiry ON holds (partition, expires_at) WHERE state = 'OPEN';
-- The list route: a wallet's holds in one state, newest first.
CREATE INDEX IF NOT EXISTS holds_wallet_state ON holds (wallet_id, state, version);

ALTER TABLE wallets ADD COLUMN IF NOT EXISTS held numeric NOT NULL DEFAULT 0 CHECK (held >= 0);
ALTER TABLE entries ADD COLUMN IF NOT EXISTS held_after numeric NOT NULL DEFAULT 0;

-- The floor counts what is held: a wallet never spends or reserves funds it has reserved.
ALTER TABLE wallets DROP CONSTRAINT IF EXISTS wallets_balance_floor;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'wallets_available_floor') THEN
        ALTER TABLE wallets ADD CONSTRAINT wallets_available_floor
            CHECK (balance - held >= -overdraft_limit);
    END IF;
END
$$;

-- A VOID, an EXPIRE and a failed CAPTURE of all that remained have no amount; the hold an
-- operation places (a HOLD's own id) or acts on is kept with it.
ALTER TABLE operations ALTER COLUMN amount DROP NOT NULL;
ALTER TABLE operations ADD COLUMN IF NOT EXISTS hold_id uuid;
ALTER TABLE operations DROP CONSTRAINT IF EXISTS operations_type_check;
ALTER TABLE operations ADD CONSTRAINT operations_type_check
    CHECK (type IN ('DEPOSIT', 'WITHDRAW', 'TRANSFER', 'HOLD', 'CAPTURE', 'VOID', 'EXPIRE'));
