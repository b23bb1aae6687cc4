-- A refused TRANSFER or CAPTURE keeps the wallet it was to credit, so its status is read from
-- that wallet too, as a decided one's is. Dead letters kept before have none.
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS to_wallet_id uuid;
