-- The outbox keeps one row per transaction instead of one per event: its events in journal
-- order, and the wallet each is keyed by. A batch of 4,000 operations on one wallet wrote 4,000
-- rows and their index entries, and the relay then read, locked and deleted each of them
-- again. `events` counts them, so the relay bounds its round without opening the arrays.
-- Payloads are stored uncompressed: they are read once, soon, and compressing them cost the
-- batch transaction more than the bytes it saved. Rows waiting from before are carried over,
-- one event each. Running the file again changes nothing.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'outbox' AND column_name = 'payload') THEN
        ALTER TABLE outbox ADD COLUMN wallet_ids uuid[], ADD COLUMN payloads text[], ADD COLUMN events integer;
        UPDATE outbox SET wallet_ids = ARRAY[wallet_id], payloads = ARRAY[payload], events = 1;
        ALTER TABLE outbox
            ALTER COLUMN wallet_ids SET NOT NULL,
            ALTER COLUMN payloads SET NOT NULL,
            ALTER COLUMN payloads SET STORAGE EXTERNAL,
            ALTER COLUMN events SET NOT NULL,
            DROP COLUMN event_id,
            DROP COLUMN wallet_id,
            DROP COLUMN payload,
            ADD CONSTRAINT outbox_events CHECK (
                events > 0 AND cardinality(wallet_ids) = events AND cardinality(payloads) = events);
    END IF;
END
$$;
