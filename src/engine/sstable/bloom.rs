//! Bloom filters over user keys, one per SSTable, kept in memory.

use xxhash_rust::xxh3::xxh3_64;

/// The hash a filter is built from and probed with.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Builds filter bytes (bit array followed by the probe count) for `hashes`.
pub(crate) fn build(hashes: &[u64], bits_per_key: usize) -> Vec<u8> {
    let nbits = (hashes.len() * bits_per_key).max(64);
    let nbytes = nbits.div_ceil(8);
    let nbits = (nbytes * 8) as u64;
    // ln 2 × bits per key minimises the false-positive rate.
    let k = ((bits_per_key as f64 * 0.69) as u8).clamp(1, 30);
    let mut out = vec![0u8; nbytes + 1];
    for &h in hashes {
        let (mut h1, h2) = (h as u32 as u64, h >> 32);
        for _ in 0..k {
            let bit = h1 % nbits;
            out[(bit / 8) as usize] |= 1 << (bit % 8);
            h1 = h1.wrapping_add(h2);
        }
    }
    out[nbytes] = k;
    out
}

/// A filter read back from a table.
pub(crate) struct Bloom {
    data: Vec<u8>,
}

impl Bloom {
    /// Wraps filter bytes; `None` when they are malformed.
    pub fn new(data: Vec<u8>) -> Option<Self> {
        let k = *data.last()?;
        (data.len() >= 2 && (1..=30).contains(&k)).then_some(Bloom { data })
    }

    /// A filter that matches everything (for tables written without one).
    pub fn all() -> Self {
        Bloom { data: Vec::new() }
    }

    /// False when the key is certainly absent.
    pub fn may_contain(&self, hash: u64) -> bool {
        let Some((&k, bits)) = self.data.split_last() else {
            return true;
        };
        let nbits = (bits.len() * 8) as u64;
        let (mut h1, h2) = (hash as u32 as u64, hash >> 32);
        for _ in 0..k {
            let bit = h1 % nbits;
            if bits[(bit / 8) as usize] & (1 << (bit % 8)) == 0 {
                return false;
            }
            h1 = h1.wrapping_add(h2);
        }
        true
    }

    /// Bytes held in memory.
    pub fn size(&self) -> usize {
        self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<Vec<u8>> = (0..10_000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
        let bloom = Bloom::new(build(&hashes, 10)).expect("valid filter");
        assert!(keys.iter().all(|k| bloom.may_contain(key_hash(k))));
        let fp = (10_000..20_000u32)
            .filter(|i| bloom.may_contain(key_hash(&i.to_be_bytes())))
            .count();
        assert!(fp < 300, "false positive rate too high: {fp} / 10000");
    }
}
