//! The executions contract ([`orchestrator_store::conformance`]) on every
//! backend: the redb files and the in-memory one.

use std::sync::Arc;

use orchestrator_store::conformance::{self, Backend};
use orchestrator_store::executions::Executions;
use orchestrator_store::executions::memory::MemoryExecutions;

#[test]
fn redb_files_keep_the_contract() {
    conformance::run(&|| -> Backend {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Box::new(move |tenant| Executions::for_tenant(&dir.path().join("store.redb"), tenant))
    });
}

#[test]
fn memory_keeps_the_contract() {
    conformance::run(&|| -> Backend {
        let memory = MemoryExecutions::new();
        Box::new(move |tenant| Executions::in_memory(&memory, tenant))
    });
}
