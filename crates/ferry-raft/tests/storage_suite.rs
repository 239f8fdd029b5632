//! openraft's own storage test suite against the RocksDB log store and the group state machine.

use std::sync::Arc;

use ferry_raft::{GroupSignals, GroupStateMachine, TypeConfig};
use ferry_storage::{LogStore, NodeDb};
use ferry_types::GroupId;
use openraft::alias::{EntryOf, LeaderIdOf, LogIdOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::vote::RaftLeaderId;

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

/// A committed log id costs no write of its own: the store remembers it and writes it with the
/// group's next append, so a store reopened on the same RocksDB sees it only after that append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_log_id_is_written_with_the_next_append() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = NodeDb::open(dir.path()).expect("open rocksdb");
    let group = GroupId(7);
    let mut log = LogStore::<TypeConfig>::new(db.clone(), group);
    let leader = LeaderIdOf::<TypeConfig>::new(1, 1).to_committed();
    let entry = |index| EntryOf::<TypeConfig>::new_blank(LogIdOf::<TypeConfig>::new(leader, index));
    let reopened_committed = || async {
        LogStore::<TypeConfig>::new(db.clone(), group)
            .read_committed()
            .await
            .expect("read committed")
    };

    log.append([entry(1)], IOFlushed::noop())
        .await
        .expect("append 1");
    let committed = Some(LogIdOf::<TypeConfig>::new(leader, 1));
    log.save_committed(committed).await.expect("save committed");
    assert_eq!(
        log.read_committed().await.expect("read committed"),
        committed
    );
    assert_eq!(
        reopened_committed().await,
        None,
        "written before the next append"
    );

    log.append([entry(2)], IOFlushed::noop())
        .await
        .expect("append 2");
    assert_eq!(reopened_committed().await, committed);
}
