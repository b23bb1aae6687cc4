-- Overdraft limits: a wallet's balance may go down to minus its limit, never below. The limit
-- is fixed when the wallet is made; wallets made before this migration keep a limit of 0, so
-- their floor stays where it was. Every statement checks before it changes anything, so
-- running the file again changes nothing.

ALTER TABLE wallets ADD COLUMN IF NOT EXISTS overdraft_limit numeric NOT NULL DEFAULT 0
    CHECK (overdraft_limit >= 0);

ALTER TABLE wallets DROP CONSTRAINT IF EXISTS wallets_balance_check;
-- The journal's own floor goes too: an entry does not know its wallet's limit, and the
-- wallet row it leads to is checked in the same transaction.
ALTER TABLE entries DROP CONSTRAINT IF EXISTS entries_balance_after_check;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'wallets_balance_floor') THEN
        ALTER TABLE wallets ADD CONSTRAINT wallets_balance_floor
            CHECK (balance >= -overdraft_limit);
    END IF;
END
$$;
