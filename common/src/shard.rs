//! Shards: each service's keys (item, user and order ids) are split over
//! `[services.X] shards` Raft groups. A key's shard is the CRC-32 (IEEE, as
//! zlib's `crc32`) of its UTF-8 bytes modulo the shard count, so any tool can
//! compute it (`python3 -c "import zlib; print(zlib.crc32(b'42') % 3)"`);
//! `batch_init` ids `"0".."n-1"` route the same way as any other key. Every
//! process that routes (coordinators, the checkout saga) computes it from
//! the spec: there is no lookup table to keep in step.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Most shards a service may have.
pub const MAX_SHARDS: u16 = 16;

/// The request header naming the shard an internal call is for (Raft RPCs,
/// reads, writes, checks); absent means shard 0, so a single-shard cluster's
/// calls are unchanged.
pub const SHARD_HEADER: &str = "cart-shard";

/// One of a service's shards, `0..shards`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Shard(pub u16);

impl Shard {
    /// The shard of `key` among `shards` (at least 1).
    pub fn of(key: &str, shards: u16) -> Shard {
        let n = u32::from(shards.max(1));
        // The remainder is below `shards`, a u16.
        Shard((crc32fast::hash(key.as_bytes()) % n) as u16)
    }

    /// Every shard of a service with `shards` shards.
    pub fn all(shards: u16) -> impl Iterator<Item = Shard> {
        (0..shards.max(1)).map(Shard)
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The shard a request's `cart-shard` header names, if it names one;
    /// an error says what is wrong with the header.
    pub fn named_in(headers: &axum::http::HeaderMap) -> Result<Option<Shard>, String> {
        headers
            .get(SHARD_HEADER)
            .map(|v| {
                v.to_str()
                    .map_err(|e| format!("{SHARD_HEADER}: {e}"))
                    .and_then(str::parse::<Shard>)
            })
            .transpose()
    }

    /// The header value that names this shard.
    pub fn header_value(self) -> String {
        self.0.to_string()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<u16>()
            .ok()
            .filter(|n| *n < MAX_SHARDS)
            .map(Shard)
            .ok_or_else(|| format!("not a shard: {s:?} (0..{MAX_SHARDS})"))
    }
}

/// The part of a service's keys one shard holds: a bulk command sent to
/// every shard (`batch_init`) creates only the keys of its part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPart {
    pub shard: Shard,
    /// How many shards the service has.
    pub of: u16,
}

impl ShardPart {
    pub fn holds(&self, key: &str) -> bool {
        Shard::of(key, self.of) == self.shard
    }
}

/// Whether `part` (none: the whole service) holds `key`.
pub fn part_holds(part: Option<ShardPart>, key: &str) -> bool {
    part.is_none_or(|p| p.holds(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_maps_to_the_crc32_of_its_bytes_modulo_the_shard_count() {
        // zlib.crc32(b"42") == 841265288, zlib.crc32(b"0") == 4108050209.
        assert_eq!(Shard::of("42", 3), Shard((841_265_288u32 % 3) as u16));
        assert_eq!(Shard::of("0", 3), Shard((4_108_050_209u32 % 3) as u16));
        assert_eq!(Shard::of("anything", 1), Shard(0));
        assert_eq!(Shard::of("anything", 0), Shard(0));
    }

    #[test]
    fn batch_init_ids_spread_over_every_shard() {
        let mut counts = [0u32; 3];
        for i in 0..3000 {
            counts[Shard::of(&i.to_string(), 3).index()] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn only_small_numbers_name_a_shard() {
        assert_eq!("2".parse::<Shard>(), Ok(Shard(2)));
        assert!("16".parse::<Shard>().is_err());
        assert!("-1".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }
}
