-- Operation metadata: the client's string labels, kept with the operation. Operations stored
-- before this migration had none.
ALTER TABLE operations ADD COLUMN IF NOT EXISTS metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
