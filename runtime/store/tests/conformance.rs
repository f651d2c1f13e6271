//! The backend contracts ([`orchestrator_store::conformance`]) on every
//! backend: the redb files and the in-memory one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use orchestrator_store::Store;
use orchestrator_store::conformance::executions::{self, Backend};
use orchestrator_store::conformance::store;
use orchestrator_store::executions::Executions;
use orchestrator_store::executions::memory::MemoryExecutions;

#[test]
fn redb_files_keep_the_executions_contract() {
    executions::run(&|| -> Backend {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Box::new(move |tenant| Executions::for_tenant(&dir.path().join("store.redb"), tenant))
    });
}

#[test]
fn memory_keeps_the_executions_contract() {
    executions::run(&|| -> Backend {
        let memory = MemoryExecutions::new();
        Box::new(move |tenant| Executions::in_memory(&memory, tenant))
    });
}

#[test]
fn the_redb_file_keeps_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let made = AtomicUsize::new(0);
    store::run(&|| {
        // Each store in a directory of its own: the response cache sits
        // beside the file.
        let n = made.fetch_add(1, Ordering::Relaxed);
        Store::open(&dir.path().join(n.to_string()).join("store.redb")).unwrap()
    });
}

#[test]
fn memory_keeps_the_store_contract() {
    store::run(&Store::in_memory);
}

#[test]
fn the_held_redb_file_keeps_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let made = AtomicUsize::new(0);
    store::run(&|| {
        let n = made.fetch_add(1, Ordering::Relaxed);
        Store::hold(&dir.path().join(n.to_string()).join("store.redb")).unwrap()
    });
}

#[test]
fn a_held_store_writes_breakers_through_itself() {
    use orchestrator_core::fault::Breaker;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::hold(&dir.path().join("store.redb")).unwrap();
    let log = store.breaker_log();
    // The store is still open here: a log that reopened the file would
    // wait for it and give up.
    log.put_breaker("a", "plugin:d1", &Breaker::default())
        .unwrap();
    assert!(store.breakers("a").unwrap().contains_key("plugin:d1"));
}
