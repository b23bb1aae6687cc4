-- Each journal entry keeps the time its batch applied it, so a wallet's balance as of an
-- instant is one indexed lookup: its last entry at or before that instant. Entries written
-- before this migration take their operation's processing time, which is the same instant.
ALTER TABLE entries ADD COLUMN IF NOT EXISTS recorded_at timestamptz;
UPDATE entries e SET recorded_at = o.processed_at FROM operations o
    WHERE e.recorded_at IS NULL AND o.tenant = e.tenant AND o.id = e.operation_id;
ALTER TABLE entries ALTER COLUMN recorded_at SET NOT NULL;
-- The version breaks ties: a batch records all its entries at one instant.
CREATE INDEX IF NOT EXISTS entries_wallet_recorded ON entries (wallet_id, recorded_at, version);
