-- Wallet ids belong to their tenant, as operation ids do (0004): two tenants may each have a
-- wallet with the same id, and neither can occupy, block or probe the other's. Every row
-- already names its tenant: a wallet since 0003, its entries since 0004 (their wallet's), its
-- holds since 0010; outbox rows gain the tenants of their events' wallets.
-- Every statement checks before it changes anything, so running the file again changes
-- nothing.

-- The relay refreshes each event's wallet in the cache, which keys it by tenant too. Until
-- this migration a wallet id was unique across tenants, so each event's wallet names its
-- tenant; an event about an operation on a missing wallet changed no balance, and 'default'
-- stands in.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS tenants text[];
UPDATE outbox o SET tenants = ARRAY(
        SELECT coalesce(w.tenant, 'default')
        FROM unnest(o.wallet_ids) WITH ORDINALITY AS e(wallet_id, n)
        LEFT JOIN wallets w ON w.id = e.wallet_id
        ORDER BY e.n)
    WHERE tenants IS NULL;
ALTER TABLE outbox ALTER COLUMN tenants SET NOT NULL;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'outbox_tenants') THEN
        ALTER TABLE outbox ADD CONSTRAINT outbox_tenants CHECK (cardinality(tenants) = events);
    END IF;
END
$$;

-- Each key leads with the tenant, so every lookup by wallet (the batch's lock, a balance, the
-- history's walks, a hold list, a balance at an instant) stays one index descent.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'wallets_tenant_id_pkey') THEN
        ALTER TABLE wallets DROP CONSTRAINT IF EXISTS wallets_pkey;
        ALTER TABLE wallets ADD CONSTRAINT wallets_tenant_id_pkey PRIMARY KEY (tenant, id);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'entries_tenant_wallet_version_pkey') THEN
        ALTER TABLE entries DROP CONSTRAINT IF EXISTS entries_pkey;
        ALTER TABLE entries ADD CONSTRAINT entries_tenant_wallet_version_pkey
            PRIMARY KEY (tenant, wallet_id, version);
    END IF;
END
$$;
DROP INDEX IF EXISTS entries_wallet_recorded;
CREATE INDEX IF NOT EXISTS entries_tenant_wallet_recorded
    ON entries (tenant, wallet_id, recorded_at, version);
DROP INDEX IF EXISTS holds_wallet_state;
CREATE INDEX IF NOT EXISTS holds_tenant_wallet_state ON holds (tenant, wallet_id, state, version);
