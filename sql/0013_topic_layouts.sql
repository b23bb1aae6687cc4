-- The partition count each operations topic had when it was first used: a wallet's partition
-- is murmur2(walletId) mod that count, so a topic that gains partitions afterwards would move
-- wallets to other partitions while their older operations wait in the old ones.
CREATE TABLE IF NOT EXISTS topic_layouts (
    topic text PRIMARY KEY,
    partitions integer NOT NULL CHECK (partitions > 0),
    recorded_at timestamptz NOT NULL
);
