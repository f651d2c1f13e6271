//! Circuit breakers around an executor. [`Breakers`] holds the state of
//! every breaker this process uses (loaded from the store, written back on
//! every change of state); [`BreakerExecutor`] wraps any [`Executor`] and,
//! for tasks whose workflow asks for a `breaker:`, refuses attempts while
//! their plugin's breaker is open (`breaker-open`, which retries and
//! fallbacks see like any failure) and counts how the others end.
//!
//! A breaker is keyed by the plugin's digest, so every task and workflow
//! using the same plugin shares it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::fault::{Admission, Breaker, BreakerPolicy, counts};
use crate::scheduler::{Executor, FailureKind, TaskFailure, TaskRequest, TaskSuccess};
use crate::store::Store;
use crate::store::executions::now_ms;

/// The breakers of one tenant in this process.
#[derive(Debug)]
pub struct Breakers {
    tenant: String,
    /// Where changes of state are written; `None` keeps them in memory.
    store: Option<PathBuf>,
    states: Mutex<BTreeMap<String, Breaker>>,
}

impl Breakers {
    /// Breakers that live only as long as this process.
    pub fn in_memory() -> Self {
        Self {
            tenant: String::new(),
            store: None,
            states: Mutex::default(),
        }
    }

    /// The breakers of `tenant` recorded in `store`; changes are written
    /// back to the store's file.
    pub fn recorded(store: &Store, tenant: &str) -> Result<Self, crate::store::StoreError> {
        Ok(Self {
            tenant: tenant.to_owned(),
            store: Some(store.path().to_owned()),
            states: Mutex::new(store.breakers(tenant)?),
        })
    }

    /// A copy of every breaker's state.
    pub fn snapshot(&self) -> BTreeMap<String, Breaker> {
        self.states.lock().expect("breakers lock").clone()
    }

    fn admit(&self, key: &str) -> Result<Admission, crate::fault::Refusal> {
        let mut states = self.states.lock().expect("breakers lock");
        let breaker = states.entry(key.to_owned()).or_default();
        let before = breaker.state;
        let admitted = breaker.admit(now_ms());
        if breaker.state != before {
            self.persist(key, breaker.clone());
        }
        admitted
    }

    fn record(&self, key: &str, admission: Admission, failed: bool, policy: &BreakerPolicy) {
        let mut states = self.states.lock().expect("breakers lock");
        let breaker = states.entry(key.to_owned()).or_default();
        if breaker.record(now_ms(), admission, failed, policy) {
            tracing::info!(breaker = key, state = breaker.state_name(), reason = %breaker.reason, "breaker changed state");
            self.persist(key, breaker.clone());
        }
    }

    /// A probe that never ended (its attempt was cancelled): let the next
    /// call probe instead.
    fn abandon(&self, key: &str) {
        let mut states = self.states.lock().expect("breakers lock");
        if let Some(breaker) = states.get_mut(key)
            && let crate::fault::BreakerState::HalfOpen { passed, .. } = breaker.state
        {
            breaker.state = crate::fault::BreakerState::HalfOpen {
                probing: false,
                passed,
            };
        }
    }

    /// Writes a change of state to the store, off the caller's thread; a
    /// failed write is logged (the state in memory still holds).
    fn persist(&self, key: &str, breaker: Breaker) {
        let Some(path) = self.store.clone() else {
            return;
        };
        let (tenant, key) = (self.tenant.clone(), key.to_owned());
        let write = move || {
            let result = Store::open(&path).and_then(|s| s.put_breaker(&tenant, &key, &breaker));
            if let Err(e) = result {
                tracing::warn!(breaker = key, "recording the breaker's state failed: {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}

/// Which breaker guards a plugin key, under which policy.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The breaker's key: `plugin:<sha256>`.
    pub key: String,
    /// The plugin, for messages.
    pub label: String,
    /// When it opens.
    pub policy: BreakerPolicy,
}

/// An executor whose guarded plugins fail fast while their breaker is open.
#[derive(Debug)]
pub struct BreakerExecutor<E> {
    inner: E,
    breakers: Arc<Breakers>,
    /// By plugin key (task id, or its fallback's key).
    guards: HashMap<String, Guard>,
}

impl<E> BreakerExecutor<E> {
    /// Wraps `inner`; `guards` names the plugin keys that have a breaker.
    pub fn new(inner: E, breakers: Arc<Breakers>, guards: HashMap<String, Guard>) -> Self {
        Self {
            inner,
            breakers,
            guards,
        }
    }
}

/// Clears a probe whose attempt was dropped before it ended.
struct ProbeGuard<'a> {
    breakers: &'a Breakers,
    key: &'a str,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breakers.abandon(self.key);
        }
    }
}

impl<E: Executor> Executor for BreakerExecutor<E> {
    async fn execute(&self, request: TaskRequest) -> Result<TaskSuccess, TaskFailure> {
        // Most workflows ask for no breaker: no key to compute or look up.
        let guard = (!self.guards.is_empty())
            .then(|| self.guards.get(request.plugin_key().as_ref()))
            .flatten();
        let Some(guard) = guard else {
            return self.inner.execute(request).await;
        };
        let admission = match self.breakers.admit(&guard.key) {
            Ok(admission) => admission,
            Err(refusal) => {
                let when = if refusal.retry_in.is_zero() {
                    "once the probe call running now succeeds".to_owned()
                } else {
                    format!(
                        "a probe call may go through in {}",
                        humantime::format_duration(std::time::Duration::from_millis(
                            refusal.retry_in.as_millis() as u64
                        ))
                    )
                };
                return Err(TaskFailure {
                    kind: FailureKind::BreakerOpen,
                    message: format!(
                        "the circuit breaker of plugin `{}` is open ({}); {when}. `runtime breakers` shows its state",
                        guard.label, refusal.reason
                    ),
                    metering: Default::default(),
                });
            }
        };
        let mut probe = ProbeGuard {
            breakers: &self.breakers,
            key: &guard.key,
            armed: admission == Admission::Probe,
        };
        let result = self.inner.execute(request).await;
        probe.armed = false;
        let failed = matches!(&result, Err(f) if counts(f.kind));
        self.breakers
            .record(&guard.key, admission, failed, &guard.policy);
        result
    }
}
