//! An in-memory [`StateStore`] with the RocksDB store's contract, for tests.

use std::collections::BTreeMap;

use ferry_queue::{StateStore, StoreError};

/// A store with the same contract as the RocksDB one: reads see earlier commands only; a command's
/// writes land together when it is committed.
#[derive(Default)]
pub struct MemStore {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    pending: Vec<Write>,
}

enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    DeleteRange(Vec<u8>, Vec<u8>),
}

impl MemStore {
    /// Every committed key and value.
    #[allow(dead_code)] // not every test binary compares whole states
    pub fn contents(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.data
    }

    pub fn commit(&mut self) {
        for write in std::mem::take(&mut self.pending) {
            match write {
                Write::Put(k, v) => {
                    self.data.insert(k, v);
                }
                Write::Delete(k) => {
                    self.data.remove(&k);
                }
                Write::DeleteRange(start, end) => self.data.retain(|k, _| k < &start || k >= &end),
            }
        }
    }
}

impl StateStore for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.data.get(key).cloned())
    }
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        for (k, v) in self.data.range(start.to_vec()..end.to_vec()) {
            if !visit(k, v) {
                break;
            }
        }
        Ok(())
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.pending.push(Write::Put(key, value));
    }
    fn delete(&mut self, key: Vec<u8>) {
        self.pending.push(Write::Delete(key));
    }
    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) {
        self.pending.push(Write::DeleteRange(start, end));
    }
}
