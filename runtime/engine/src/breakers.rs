//! Circuit breakers in a running process. [`Breakers`] holds the state of
//! every breaker this process uses (loaded from the store, written back on
//! every change of state). Two things consult it:
//! - [`BreakerExecutor`] wraps any [`Executor`] and, for tasks whose
//!   workflow asks for a plugin `breaker:`, refuses attempts while their
//!   plugin's breaker is open (`breaker-open`, which retries and fallbacks
//!   see like any failure) and counts how the others end;
//! - [`HostBreakers`], held by the sandbox's egress, refuses HTTP requests
//!   to a host whose breaker is open and counts how the others end.
//!
//! A plugin breaker is keyed `plugin:<sha256>`, a host breaker
//! `host:<name>:<port>` ([`BreakerKey`]), so every task and workflow using
//! the same plugin, or calling the same host, shares it. [`list`] is what
//! front ends show of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use orchestrator_core::fault::{Admission, Breaker, BreakerPolicy, Refusal, counts};
use orchestrator_core::scheduler::{Executor, FailureKind, TaskFailure, TaskRequest, TaskSuccess};
use orchestrator_sandbox::host_guard::{HostCall as SandboxHostCall, HostGuard};
use orchestrator_store::Store;
use orchestrator_store::breakers::BreakersBackend;
use orchestrator_store::executions::now_ms;

/// The breakers of one tenant in this process.
#[derive(Debug)]
pub struct Breakers {
    tenant: String,
    /// Where changes of state are written; `None` keeps them in memory.
    log: Option<Arc<dyn BreakersBackend>>,
    states: Mutex<BTreeMap<String, Breaker>>,
    /// Changes on their way to the log.
    writes: Arc<Writes>,
}

/// Changes of state written on blocking threads, which run in any order:
/// each change is numbered, and one that finds a later change of its
/// breaker written already is dropped, so the log ends with the last.
#[derive(Debug, Default)]
struct Writes {
    /// Changes numbered so far.
    numbered: std::sync::atomic::AtomicU64,
    /// The number of each breaker's change written last (held while
    /// writing, so two writes of a breaker never cross).
    written: Mutex<HashMap<String, u64>>,
    /// Changes not written yet.
    pending: std::sync::atomic::AtomicUsize,
}

impl Breakers {
    /// Breakers that live only as long as this process.
    pub fn in_memory() -> Self {
        Self {
            tenant: String::new(),
            log: None,
            states: Mutex::default(),
            writes: Arc::default(),
        }
    }

    /// The breakers of `tenant` recorded in `store`; changes are written
    /// back through the store's breaker log.
    pub fn recorded(store: &Store, tenant: &str) -> Result<Self, orchestrator_store::StoreError> {
        Ok(Self {
            tenant: tenant.to_owned(),
            log: Some(store.breaker_log()),
            states: Mutex::new(store.breakers(tenant)?),
            writes: Arc::default(),
        })
    }

    /// A copy of every breaker's state.
    pub fn snapshot(&self) -> BTreeMap<String, Breaker> {
        self.states.lock().expect("breakers lock").clone()
    }

    fn admit(&self, key: &str) -> Result<Admission, Refusal> {
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
            && let orchestrator_core::fault::BreakerState::HalfOpen { passed, .. } = breaker.state
        {
            breaker.state = orchestrator_core::fault::BreakerState::HalfOpen {
                probing: false,
                passed,
            };
        }
    }

    /// Writes a change of state to the store, off the caller's thread; a
    /// failed write is logged (the state in memory still holds).
    fn persist(&self, key: &str, breaker: Breaker) {
        let Some(log) = self.log.clone() else {
            return;
        };
        let (tenant, key) = (self.tenant.clone(), key.to_owned());
        let writes = Arc::clone(&self.writes);
        // Numbered under the states lock: in the order the changes happened.
        let number = writes.numbered.fetch_add(1, Ordering::SeqCst) + 1;
        writes.pending.fetch_add(1, Ordering::SeqCst);
        let write = move || {
            {
                let mut written = writes.written.lock().expect("breaker writes lock");
                if written.get(&key).is_none_or(|last| *last < number) {
                    if let Err(e) = log.put_breaker(&tenant, &key, &breaker) {
                        tracing::warn!(breaker = key, "recording the breaker's state failed: {e}");
                    }
                    written.insert(key, number);
                }
            }
            writes.pending.fetch_sub(1, Ordering::SeqCst);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}

impl Breakers {
    /// Waits (up to 5 s) until the changes of state handed to the log are
    /// written: what a run does before it ends, so a process that exits
    /// after it leaves the log as its breakers stand.
    pub async fn flush(&self) {
        let patience = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.writes.pending.load(Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < patience
        {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
}

/// Why a call was refused, in words: whose breaker, why it opened, when a
/// probe may go through.
fn open_message(whose: &str, refusal: &Refusal) -> String {
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
    format!(
        "the circuit breaker of {whose} is open ({}); {when}. `runtime breakers` shows its state",
        refusal.reason
    )
}

/// The breakers guarding every host one plugin sends HTTP requests to.
#[derive(Debug, Clone)]
pub struct HostBreakers {
    breakers: Arc<Breakers>,
    policy: BreakerPolicy,
}

impl HostBreakers {
    /// Host breakers kept in `breakers`, opening under `policy`.
    pub fn new(breakers: Arc<Breakers>, policy: BreakerPolicy) -> Self {
        Self { breakers, policy }
    }
}

impl HostGuard for HostBreakers {
    fn admit(&self, host: &str, port: u16) -> Result<Box<dyn SandboxHostCall>, String> {
        let key = BreakerKey::Host {
            host: host.to_owned(),
            port,
        }
        .to_string();
        match self.breakers.admit(&key) {
            Ok(admission) => Ok(Box::new(HostCall {
                guard: self.clone(),
                key,
                admission,
                ended: false,
            })),
            Err(refusal) => Err(open_message(&format!("host `{host}:{port}`"), &refusal)),
        }
    }
}

/// A request a host breaker let through; [`HostCall::end`] counts how it
/// ended. Dropped without ending (the attempt was cut off), a probe makes
/// way for the next one.
#[derive(Debug)]
pub struct HostCall {
    guard: HostBreakers,
    key: String,
    admission: Admission,
    ended: bool,
}

impl SandboxHostCall for HostCall {
    fn end(mut self: Box<Self>, failed: bool) {
        self.ended = true;
        let guard = &self.guard;
        guard
            .breakers
            .record(&self.key, self.admission, failed, &guard.policy);
    }
}

impl Drop for HostCall {
    fn drop(&mut self) {
        if !self.ended && self.admission == Admission::Probe {
            self.guard.breakers.abandon(&self.key);
        }
    }
}

/// Which breaker guards a plugin key, under which policy.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The breaker's key (`BreakerKey::Plugin`, as text).
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
                return Err(TaskFailure {
                    kind: FailureKind::BreakerOpen,
                    message: open_message(&format!("plugin `{}`", guard.label), &refusal),
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

/// What a breaker guards, as a type. Breakers are kept under its text
/// form, written by its `Display` and read by [`BreakerKey::parse`] alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BreakerKey {
    /// A plugin, by the sha256 of its component: `plugin:<sha256>`.
    Plugin {
        /// The component's digest.
        digest: String,
    },
    /// A host a plugin calls: `host:<name>:<port>`.
    Host {
        /// Its name or address.
        host: String,
        /// Its port.
        port: u16,
    },
}

impl BreakerKey {
    /// Reads a key's text form; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(digest) = text.strip_prefix("plugin:") {
            return Some(Self::Plugin {
                digest: digest.to_owned(),
            });
        }
        let (host, port) = text.strip_prefix("host:")?.rsplit_once(':')?;
        Some(Self::Host {
            host: host.to_owned(),
            port: port.parse().ok()?,
        })
    }
}

impl std::fmt::Display for BreakerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plugin { digest } => write!(f, "plugin:{digest}"),
            Self::Host { host, port } => write!(f, "host:{host}:{port}"),
        }
    }
}

/// One breaker as front ends show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BreakerView {
    /// Its key, as stored.
    pub key: String,
    /// What it guards, in words: `host api.example.com:443`, the
    /// `name@version`s installed with the plugin's digest, or that no
    /// installed plugin has it (a plugin named by path).
    pub guards: String,
    /// Its state.
    pub breaker: Breaker,
}

/// Every breaker of `tenant`, with what each guards.
pub fn list(
    store: &Store,
    tenant: &str,
) -> Result<Vec<BreakerView>, orchestrator_store::StoreError> {
    let breakers = store.breakers(tenant)?;
    let plugins = store.plugins(tenant)?;
    let guards = |key: &str| match BreakerKey::parse(key) {
        Some(BreakerKey::Host { host, port }) => format!("host {host}:{port}"),
        Some(BreakerKey::Plugin { digest }) => {
            let named: Vec<String> = plugins
                .iter()
                .filter(|p| p.digest == digest)
                .map(|p| format!("{}@{}", p.name, p.version))
                .collect();
            if named.is_empty() {
                format!("{key} (not installed: a plugin named by path)")
            } else {
                named.join(", ")
            }
        }
        None => key.to_owned(),
    };
    Ok(breakers
        .into_iter()
        .map(|(key, breaker)| BreakerView {
            guards: guards(&key),
            key,
            breaker,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_keys_round_trip() {
        for key in [
            BreakerKey::Plugin {
                digest: "ab12".into(),
            },
            BreakerKey::Host {
                host: "::1".into(),
                port: 8080,
            },
        ] {
            assert_eq!(BreakerKey::parse(&key.to_string()), Some(key));
        }
        assert_eq!(BreakerKey::parse("host:x"), None);
        assert_eq!(BreakerKey::parse("other"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_ends_with_the_last_change_however_the_writes_run() {
        let store = Store::in_memory();
        let breakers = Breakers::recorded(&store, "t").unwrap();
        let policy = BreakerPolicy {
            failures: 1,
            open_for: std::time::Duration::ZERO,
            probes: 1,
            ..BreakerPolicy::default()
        };
        // Open, probe, close, many times over: changes a moment apart.
        for _ in 0..50 {
            let call = breakers.admit("k").unwrap();
            breakers.record("k", call, true, &policy);
            let probe = breakers.admit("k").unwrap();
            breakers.record("k", probe, false, &policy);
        }
        breakers.flush().await;
        assert_eq!(breakers.writes.pending.load(Ordering::SeqCst), 0);
        assert_eq!(store.breakers("t").unwrap()["k"], breakers.snapshot()["k"]);
    }
}
