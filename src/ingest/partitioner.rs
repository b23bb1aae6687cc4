//! Which partition a wallet's operations go to: the Java client's default partitioner, so
//! every producer, in any language, agrees.

use crate::ledger::types::WalletId;

/// murmur2 of the key bytes with Kafka's seed, made positive, modulo the partition count.
pub fn partition_for(wallet_id: WalletId, partitions: i32) -> i32 {
    partition_for_key(wallet_id.to_string().as_bytes(), partitions)
}

fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff;
    (hash % partitions as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values computed by Kafka's `Utils.toPositive(Utils.murmur2(key)) % n`.
    #[test]
    fn matches_the_java_partitioner() {
        assert_eq!(
            murmur2::murmur2(b"21", murmur2::KAFKA_SEED) as i32,
            -973932308
        );
        assert_eq!(
            murmur2::murmur2(b"foobar", murmur2::KAFKA_SEED) as i32,
            -790332482
        );
        assert_eq!(
            murmur2::murmur2(b"a-little-bit-long-string", murmur2::KAFKA_SEED) as i32,
            -985981536
        );
        assert_eq!(
            murmur2::murmur2(
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                murmur2::KAFKA_SEED
            ) as i32,
            -58897971
        );
        assert_eq!(
            partition_for_key(b"foobar", 8),
            ((-790332482i32 & 0x7fff_ffff) % 8)
        );
    }

    #[test]
    fn every_partition_is_used() {
        let mut seen = [false; 8];
        for n in 0..200u128 {
            let id = WalletId(uuid::Uuid::from_u128(n * 7919));
            seen[partition_for(id, 8) as usize] = true;
        }
        assert!(seen.iter().all(|used| *used));
    }
}
