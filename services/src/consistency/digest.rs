//! The bucketed digest of a replica's stored state.
//!
//! Every stored row (table, key, value bytes) hashes to a 32-byte entry
//! hash. The row's bucket comes from its key alone (so a changed value stays
//! in its bucket): the first two bytes of SHA-256(table, key) pick one of
//! 256 level-1 buckets and one of 256 leaves under it (65,536 leaves). A
//! leaf's digest is the XOR of its entries' hashes, so it does not depend
//! on scan order; a level-1 digest hashes its 256 leaves in order, and the
//! root hashes the 256 level-1 digests. Comparing roots says whether two
//! replicas agree; descending the two levels names the leaves that differ,
//! and only their keys need comparing.

use sha2::{Digest as _, Sha256};

use crate::domain::Table;

pub const FANOUT: usize = 256;
pub const LEAVES: usize = FANOUT * FANOUT;

pub type Hash = [u8; 32];

/// The tables a digest covers: the replicated business and saga state.
/// Remembered request ids (derived, short-lived) and the check reports
/// themselves are left out.
pub const DIGEST_TABLES: [Table; 8] = [
    Table::Items,
    Table::Users,
    Table::Orders,
    Table::Checkouts,
    Table::OpenCheckouts,
    Table::CheckoutsByTime,
    Table::Steps,
    Table::StepsByTime,
];

pub fn table_tag(table: Table) -> u8 {
    DIGEST_TABLES.iter().position(|t| *t == table).unwrap_or(0) as u8
}

pub fn table_of(tag: u8) -> Option<Table> {
    DIGEST_TABLES.get(usize::from(tag)).copied()
}

/// The leaf (0..65536) of a row: from the table and key only.
pub fn leaf_of(table: Table, key: &[u8]) -> u16 {
    let mut h = Sha256::new();
    h.update([table_tag(table)]);
    h.update(key);
    let d = h.finalize();
    u16::from_be_bytes([d[0], d[1]])
}

/// The hash of one stored row, value bytes included.
pub fn entry_hash(table: Table, key: &[u8], value: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([table_tag(table)]);
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    h.update(value);
    h.finalize().into()
}

pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A replica's digest tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    pub leaves: Vec<Hash>,
    pub level1: Vec<Hash>,
    pub root: Hash,
    pub keys: u64,
}

/// Builds a tree from rows, in any order.
#[derive(Clone)]
pub struct TreeBuilder {
    leaves: Vec<Hash>,
    keys: u64,
}

impl Default for TreeBuilder {
    fn default() -> Self {
        Self {
            leaves: vec![[0; 32]; LEAVES],
            keys: 0,
        }
    }
}

impl TreeBuilder {
    pub fn add(&mut self, table: Table, key: &[u8], value: &[u8]) {
        let leaf = &mut self.leaves[usize::from(leaf_of(table, key))];
        for (a, b) in leaf.iter_mut().zip(entry_hash(table, key, value)) {
            *a ^= b;
        }
        self.keys += 1;
    }

    pub fn finish(self) -> Tree {
        let level1: Vec<Hash> = self
            .leaves
            .chunks(FANOUT)
            .map(|leaves| {
                let mut h = Sha256::new();
                for leaf in leaves {
                    h.update(leaf);
                }
                h.finalize().into()
            })
            .collect();
        let mut h = Sha256::new();
        for l in &level1 {
            h.update(l);
        }
        Tree {
            leaves: self.leaves,
            level1,
            root: h.finalize().into(),
            keys: self.keys,
        }
    }
}

/// Level-1 buckets whose digests differ.
pub fn differing_level1(a: &[Hash], b: &[Hash]) -> Vec<u8> {
    (0..FANOUT.min(a.len()).min(b.len()))
        .filter(|i| a[*i] != b[*i])
        .map(|i| i as u8)
        .collect()
}

/// The leaves under level-1 bucket `bucket`.
pub fn leaves_under(bucket: u8) -> std::ops::Range<usize> {
    let start = usize::from(bucket) * FANOUT;
    start..start + FANOUT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(rows: &[(&str, &str)]) -> Tree {
        let mut b = TreeBuilder::default();
        for (k, v) in rows {
            b.add(Table::Items, k.as_bytes(), v.as_bytes());
        }
        b.finish()
    }

    #[test]
    fn the_digest_does_not_depend_on_scan_order() {
        let a = tree(&[("1", "x"), ("2", "y"), ("3", "z")]);
        let b = tree(&[("3", "z"), ("1", "x"), ("2", "y")]);
        assert_eq!(a, b);
        assert_eq!(a.keys, 3);
    }

    #[test]
    fn one_changed_value_is_located_to_its_leaf() {
        let rows: Vec<(String, String)> = (0..1000).map(|i| (i.to_string(), "v".into())).collect();
        let refs: Vec<(&str, &str)> = rows.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let good = tree(&refs);
        let mut bad_rows = refs.clone();
        bad_rows[417] = ("417", "corrupt");
        let bad = tree(&bad_rows);
        assert_ne!(good.root, bad.root);
        let l1 = differing_level1(&good.level1, &bad.level1);
        assert_eq!(l1.len(), 1);
        let leaves: Vec<usize> = leaves_under(l1[0])
            .filter(|i| good.leaves[*i] != bad.leaves[*i])
            .collect();
        assert_eq!(leaves, vec![usize::from(leaf_of(Table::Items, b"417"))]);
    }

    #[test]
    fn a_missing_key_and_the_same_key_in_another_table_differ() {
        let a = tree(&[("1", "x")]);
        let empty = tree(&[]);
        assert_ne!(a.root, empty.root);
        let mut b = TreeBuilder::default();
        b.add(Table::Users, b"1", b"x");
        assert_ne!(a.root, b.finish().root);
    }
}
