//! A write view that buffers a batch's writes over a read view: reads see
//! the batch's own writes first, then the stored state. The buffered writes
//! (the final value of every key the batch touched) are what a backend
//! without multi-document transactions commits as one redo record.

use std::collections::{BTreeMap, HashMap};

use crate::domain::{StateStore, StoreError, Table};

/// The final value of every key a batch wrote; `None`: deleted.
pub type Writes = HashMap<Table, BTreeMap<String, Option<Vec<u8>>>>;

pub struct Overlay<'a> {
    base: &'a dyn StateStore,
    pub writes: Writes,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a dyn StateStore) -> Self {
        Self {
            base,
            writes: Writes::new(),
        }
    }
}

impl StateStore for Overlay<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(&table).and_then(|t| t.get(key)) {
            Some(written) => Ok(written.clone()),
            None => self.base.get(table, key),
        }
    }

    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.writes
            .entry(table)
            .or_default()
            .insert(key.to_string(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
        self.writes
            .entry(table)
            .or_default()
            .insert(key.to_string(), None);
        Ok(())
    }

    fn keys(
        &self,
        table: Table,
        below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let empty = BTreeMap::new();
        let written = self.writes.get(&table).unwrap_or(&empty);
        let in_range = |k: &str| below.is_none_or(|b| k < b);
        let deleted = written.values().filter(|v| v.is_none()).count();
        // Enough stored keys that `limit` survive the batch's deletes.
        let mut keys: Vec<String> = self
            .base
            .keys(table, below, limit.saturating_add(deleted))?
            .into_iter()
            .filter(|k| !matches!(written.get(k), Some(None)))
            .collect();
        keys.extend(
            written
                .iter()
                .filter(|(k, v)| v.is_some() && in_range(k))
                .map(|(k, _)| k.clone()),
        );
        keys.sort();
        keys.dedup();
        keys.truncate(limit);
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::memory::MemoryStore;

    #[test]
    fn reads_see_the_batch_first_and_keys_merge_in_order() {
        let mut base = MemoryStore::default();
        for k in ["a", "b", "c", "d"] {
            base.put(Table::Items, k, b"old").unwrap();
        }
        let mut o = Overlay::new(&base);
        o.put(Table::Items, "b", b"new").unwrap();
        o.delete(Table::Items, "a").unwrap();
        o.put(Table::Items, "bb", b"new").unwrap();
        assert_eq!(o.get(Table::Items, "b").unwrap().unwrap(), b"new");
        assert_eq!(o.get(Table::Items, "a").unwrap(), None);
        assert_eq!(o.get(Table::Items, "c").unwrap().unwrap(), b"old");
        assert_eq!(o.keys(Table::Items, None, 3).unwrap(), ["b", "bb", "c"]);
        assert_eq!(o.keys(Table::Items, Some("c"), 10).unwrap(), ["b", "bb"]);
        assert_eq!(
            o.keys(Table::Users, None, 10).unwrap(),
            Vec::<String>::new()
        );
    }
}
