//! openraft's own storage test suite against the RocksDB log store and the group state machine.

use std::sync::Arc;

use ferry_raft::{GroupSignals, GroupStateMachine, TypeConfig};
use ferry_storage::{LogStore, NodeDb};
use ferry_types::GroupId;
use openraft::testing::log::{StoreBuilder, Suite};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, GroupStateMachine, tempfile::TempDir>
    for RocksBuilder
{
    async fn build(
        &self,
    ) -> Result<
        (tempfile::TempDir, LogStore<TypeConfig>, GroupStateMachine),
        openraft::StorageError<TypeConfig>,
    > {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = NodeDb::open(dir.path()).expect("open rocksdb");
        // A partition group, not group 0, so the test also covers the group key prefix.
        let group = GroupId(7);
        let log = LogStore::new(db.clone(), group);
        let machine = GroupStateMachine::open(
            db,
            group,
            Arc::new(GroupSignals::default()),
            None,
            log.clone(),
        )
        .expect("open machine");
        Ok((dir, log, machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_store_passes_the_openraft_suite() {
    Suite::test_all(RocksBuilder)
        .await
        .expect("openraft storage suite");
}
