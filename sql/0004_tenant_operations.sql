-- Operation ids belong to their tenant: two tenants may use the same id, and neither can
-- occupy, block or probe the other's. Every statement checks before it changes anything, so
-- running the file again (by hand, or after a partial failure) changes nothing.

ALTER TABLE operations ADD COLUMN IF NOT EXISTS tenant text;
-- An operation belongs to its source wallet's tenant; one naming no wallet stays 'default'.
UPDATE operations o SET tenant = w.tenant FROM wallets w WHERE o.tenant IS NULL AND w.id = o.wallet_id;
UPDATE operations SET tenant = 'default' WHERE tenant IS NULL;
ALTER TABLE operations ALTER COLUMN tenant SET NOT NULL;

-- Entries name their operation within the wallet's tenant (a transfer never leaves it).
ALTER TABLE entries ADD COLUMN IF NOT EXISTS tenant text;
UPDATE entries e SET tenant = w.tenant FROM wallets w WHERE e.tenant IS NULL AND w.id = e.wallet_id;
ALTER TABLE entries ALTER COLUMN tenant SET NOT NULL;

ALTER TABLE entries DROP CONSTRAINT IF EXISTS entries_operation_id_fkey;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'operations_tenant_id_pkey') THEN
        ALTER TABLE operations DROP CONSTRAINT IF EXISTS operations_pkey;
        ALTER TABLE operations ADD CONSTRAINT operations_tenant_id_pkey PRIMARY KEY (tenant, id);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'entries_tenant_operation_fkey') THEN
        ALTER TABLE entries ADD CONSTRAINT entries_tenant_operation_fkey
            FOREIGN KEY (tenant, operation_id) REFERENCES operations (tenant, id);
    END IF;
END
$$;

-- A dead letter that was a readable operation keeps its identity, so the operation's status
-- answers FAILED instead of PENDING forever.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS tenant text;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS operation_id uuid;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS wallet_id uuid;
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS accepted_at timestamptz;
CREATE INDEX IF NOT EXISTS dead_letters_operation ON dead_letters (tenant, operation_id)
    WHERE operation_id IS NOT NULL;
