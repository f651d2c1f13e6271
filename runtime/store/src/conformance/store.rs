//! The store contract: `run(&fresh)` where `fresh()` gives a new, empty
//! [`Store`] on the backend under test.

// A test suite: a broken contract is a panic that names it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orchestrator_core::fault::{Breaker, BreakerState};
use orchestrator_core::plugin::Grants;

use crate::Store;
use crate::plugins::{Artifact, Installed, PluginQuota, PluginRecord};
use crate::responses::CachedAnswer;

/// One check of the contract.
pub type Check = fn(&dyn Fn() -> Store);

/// Every check, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("installs_are_decided_alike", installs_are_decided_alike),
    (
        "the_last_name_takes_its_blob_along",
        the_last_name_takes_its_blob_along,
    ),
    (
        "a_quota_refusal_writes_nothing",
        a_quota_refusal_writes_nothing,
    ),
    ("plugins_of_tenants_are_apart", plugins_of_tenants_are_apart),
    ("workflows_keep_versions", workflows_keep_versions),
    ("breakers_round_trip", breakers_round_trip),
    ("answers_expire", answers_expire),
    (
        "api_keys_are_kept_and_revoked",
        api_keys_are_kept_and_revoked,
    ),
    (
        "audit_entries_are_numbered_per_tenant",
        audit_entries_are_numbered_per_tenant,
    ),
    ("tenants_keep_their_limits", tenants_keep_their_limits),
];

/// Runs every check, each on a fresh store from `fresh`.
pub fn run(fresh: &dyn Fn() -> Store) {
    for (name, check) in CHECKS {
        eprintln!("store conformance: {name}");
        check(fresh);
    }
}

fn plugin(name: &str, digest: &str, size: u64) -> PluginRecord {
    PluginRecord {
        name: name.to_owned(),
        version: "1.0.0".to_owned(),
        digest: digest.to_owned(),
        size,
        manifest: Default::default(),
        grants: Grants::default(),
        installed_at: 1,
        builtin: false,
    }
}

fn artifact(engine: &str) -> Artifact<'_> {
    Artifact {
        engine,
        bytes: b"compiled",
    }
}

fn install(store: &Store, tenant: &str, record: &PluginRecord, quota: PluginQuota) -> Installed {
    store
        .install_plugin(tenant, record, b"component", artifact("e1"), quota)
        .unwrap()
}

fn installs_are_decided_alike(fresh: &dyn Fn() -> Store) {
    let store = fresh();
    let a = plugin("a", "d1", 9);
    assert_eq!(
        install(&store, "t", &a, PluginQuota::default()),
        Installed::New
    );
    assert_eq!(
        install(&store, "t", &a, PluginQuota::default()),
        Installed::Unchanged
    );
    let mut granted = a.clone();
    granted.grants.env = vec!["HOME".into()];
    assert_eq!(
        install(&store, "t", &granted, PluginQuota::default()),
        Installed::GrantsChanged
    );
    let other = plugin("a", "d2", 9);
    assert_eq!(
        install(&store, "t", &other, PluginQuota::default()),
        Installed::Conflict {
            existing: "d1".into()
        }
    );
    assert_eq!(store.plugins("t").unwrap(), vec![granted]);
    assert_eq!(store.plugin_blob("t", "d1").unwrap().unwrap(), b"component");
    assert_eq!(
        store.plugin_blob("t", "d2").unwrap(),
        None,
        "a conflict writes nothing"
    );
    assert_eq!(
        store.plugin_artifact("t", "d1", "e1").unwrap().unwrap(),
        b"compiled"
    );
    assert_eq!(store.plugin_artifact("t", "d1", "e2").unwrap(), None);
    store
        .put_plugin_artifact("t", "d1", artifact("e2"))
        .unwrap();
    assert!(store.plugin_artifact("t", "d1", "e2").unwrap().is_some());
    let b = plugin("b", "d3", 1);
    assert_eq!(
        install(&store, "t", &b, PluginQuota::default()),
        Installed::New
    );
    let names: Vec<_> = store
        .plugins("t")
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["a", "b"], "ordered by name");
}

fn the_last_name_takes_its_blob_along(fresh: &dyn Fn() -> Store) {
    let store = fresh();
    let first = plugin("first", "d1", 9);
    let second = plugin("second", "d1", 9);
    install(&store, "t", &first, PluginQuota::default());
    install(&store, "t", &second, PluginQuota::default());
    assert_eq!(store.plugin_blob_count("t").unwrap(), (1, 1), "stored once");
    let (removed, blob_gone) = store.remove_plugin("t", "first", "1.0.0").unwrap().unwrap();
    assert_eq!((removed.name.as_str(), blob_gone), ("first", false));
    assert!(store.plugin_blob("t", "d1").unwrap().is_some());
    let (_, blob_gone) = store
        .remove_plugin("t", "second", "1.0.0")
        .unwrap()
        .unwrap();
    assert!(blob_gone);
    assert_eq!(store.plugin_blob("t", "d1").unwrap(), None);
    assert_eq!(store.plugin_artifact("t", "d1", "e1").unwrap(), None);
    assert_eq!(store.plugin_blob_count("t").unwrap(), (0, 0));
    assert_eq!(store.remove_plugin("t", "second", "1.0.0").unwrap(), None);
}

fn a_quota_refusal_writes_nothing(fresh: &dyn Fn() -> Store) {
    let store = fresh();
    let mut builtin = plugin("llm", "d0", 1000);
    builtin.builtin = true;
    let one = PluginQuota {
        plugins: Some(1),
        bytes: Some(10),
    };
    assert_eq!(
        install(&store, "t", &builtin, one),
        Installed::New,
        "built-ins are not counted"
    );
    assert_eq!(
        install(&store, "t", &plugin("a", "d1", 9), one),
        Installed::New
    );
    assert_eq!(
        install(&store, "t", &plugin("b", "d2", 1), one),
        Installed::OverQuota {
            limit: "plugins",
            max: 1,
            used: 1
        }
    );
    let bytes = PluginQuota {
        plugins: None,
        bytes: Some(10),
    };
    assert_eq!(
        install(&store, "t", &plugin("b", "d2", 2), bytes),
        Installed::OverQuota {
            limit: "plugin_bytes",
            max: 10,
            used: 9
        }
    );
    assert_eq!(
        install(&store, "t", &plugin("c", "d1", 9), bytes),
        Installed::New,
        "a component already stored takes no more bytes"
    );
    assert_eq!(store.plugins("t").unwrap().len(), 3);
    assert_eq!(store.plugin_blob("t", "d2").unwrap(), None);
}

fn plugins_of_tenants_are_apart(fresh: &dyn Fn() -> Store) {
    let store = fresh();
    install(&store, "a", &plugin("p", "d1", 9), PluginQuota::default());
    assert!(store.plugins("b").unwrap().is_empty());
    assert_eq!(store.plugin_blob("b", "d1").unwrap(), None);
    assert_eq!(store.plugin_artifact("b", "d1", "e1").unwrap(), None);
    assert_eq!(store.plugin_blob_count("b").unwrap(), (0, 0));
    assert_eq!(store.remove_plugin("b", "p", "1.0.0").unwrap(), None);
    // The same name@version with other bytes is no conflict for another tenant.
    assert_eq!(
        install(&store, "b", &plugin("p", "d2", 9), PluginQuota::default()),
        Installed::New
    );
    assert_eq!(store.plugins("a").unwrap()[0].digest, "d1");
    // A tenant whose id is a prefix of another's sees only its own.
    assert!(store.plugins("").unwrap().is_empty());
    install(&store, "ab", &plugin("q", "d3", 9), PluginQuota::default());
    assert_eq!(store.plugins("a").unwrap().len(), 1);
}

fn workflows_keep_versions(fresh: &dyn Fn() -> Store) {
    let store = fresh();
    assert_eq!(
        store.add_workflow("t", "w", "w.yaml", "v1").unwrap(),
        (1, true)
    );
    assert_eq!(
        store.add_workflow("t", "w", "w.yaml", "v1").unwrap(),
        (1, false)
    );
    assert_eq!(
        store.add_workflow("t", "w", "w.yaml", "v2").unwrap(),
        (2, true)
    );
    assert_eq!(
        store.add_workflow("t", "v", "v.yaml", "x").unwrap(),
        (1, true)
    );
    let kept: Vec<_> = store
        .workflows("t")
        .unwrap()
        .into_iter()
        .map(|w| (w.name, w.version, w.source))
        .collect();
    assert_eq!(
        kept,
        [
            ("v".into(), 1, "x".into()),
            ("w".into(), 1, "v1".into()),
            ("w".into(), 2, "v2".into())
        ]
    );
    assert!(store.workflows("u").unwrap().is_empty());
    assert_eq!(
        store.add_workflow("u", "w", "w.yaml", "v2").unwrap(),
        (1, true),
        "versions count per tenant"
    );
}

fn breakers_round_trip(fresh: &dyn Fn() -> Store) {
    let store = fresh();
    let open = Breaker {
        state: BreakerState::Open { until: 42 },
        since: 7,
        reason: "5 failures".into(),
        ..Breaker::default()
    };
    store.put_breaker("a", "plugin:d1", &open).unwrap();
    assert_eq!(store.breakers("a").unwrap()["plugin:d1"], open);
    assert!(store.breakers("b").unwrap().is_empty());
    // A running process writes through the log while it does not hold
    // the store.
    let log = store.breaker_log();
    drop(store);
    log.put_breaker("a", "host:x:443", &Breaker::default())
        .unwrap();
    let kept = log.breakers("a").unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept["plugin:d1"], open);
}

fn answers_expire(fresh: &dyn Fn() -> Store) {
    let store = fresh();
    let cache = store.responses();
    assert_eq!(cache.get("a", "k", 0, 100).unwrap(), None);
    let answer = CachedAnswer {
        output: serde_json::json!({ "text": "hi" }),
        model: Some("m".into()),
        stored_at: 100,
    };
    cache.put("a", "k", &answer).unwrap();
    assert_eq!(cache.get("a", "k", 150, 100).unwrap(), Some(answer.clone()));
    assert_eq!(
        cache.get("a", "k", 200, 100).unwrap(),
        None,
        "older than the ttl"
    );
    assert_eq!(
        cache.get("b", "k", 150, 100).unwrap(),
        None,
        "another tenant's"
    );
    let again = store.responses();
    assert_eq!(
        again.get("a", "k", 150, 100).unwrap(),
        Some(answer),
        "every handle of the store sees the same cache"
    );
}

fn api_keys_are_kept_and_revoked(fresh: &dyn Fn() -> Store) {
    let store = fresh();
    let key = crate::keys::ApiKeyRecord {
        id: "k1".into(),
        tenant: "acme".into(),
        role: "operator".into(),
        name: "ci".into(),
        salt: "00".into(),
        hash: "ff".into(),
        created_at: 1,
        revoked_at: None,
    };
    assert!(store.put_key(&key).unwrap());
    assert!(!store.put_key(&key).unwrap(), "an id is taken once");
    assert_eq!(store.key("k1").unwrap(), Some(key.clone()));
    assert_eq!(store.key("k2").unwrap(), None);
    assert!(store.revoke_key("k1", 5).unwrap());
    assert!(store.revoke_key("k1", 9).unwrap());
    assert_eq!(
        store.key("k1").unwrap().unwrap().revoked_at,
        Some(5),
        "the first revocation stands"
    );
    assert!(!store.revoke_key("k2", 5).unwrap());
    assert_eq!(store.keys().unwrap().len(), 1);
}

fn audit_entries_are_numbered_per_tenant(fresh: &dyn Fn() -> Store) {
    let store = fresh();
    let entry = |tenant: &str, at: u64, rpc: &str| crate::audit::AuditEntry {
        at,
        tenant: tenant.into(),
        key_id: "k1".into(),
        role: "operator".into(),
        rpc: rpc.into(),
        target: "e1".into(),
        outcome: "OK".into(),
        detail: String::new(),
    };
    assert_eq!(store.append_audit(&entry("a", 10, "Start")).unwrap(), 1);
    assert_eq!(store.append_audit(&entry("b", 11, "Start")).unwrap(), 1);
    assert_eq!(store.append_audit(&entry("a", 20, "Cancel")).unwrap(), 2);
    assert_eq!(store.append_audit(&entry("", 21, "List")).unwrap(), 1);
    assert_eq!(store.append_audit(&entry("a", 30, "Signal")).unwrap(), 3);
    let a = store.audit("a", 0, 10).unwrap();
    let rpcs: Vec<_> = a.iter().map(|(n, e)| (*n, e.rpc.as_str())).collect();
    assert_eq!(rpcs, [(1, "Start"), (2, "Cancel"), (3, "Signal")]);
    assert_eq!(a[0].1, entry("a", 10, "Start"));
    assert_eq!(store.audit("a", 1, 1).unwrap()[0].0, 2, "a page after 1");
    assert_eq!(store.audit("b", 0, 10).unwrap().len(), 1, "tenants apart");
    assert_eq!(store.audit("", 0, 10).unwrap()[0].1.rpc, "List");
    assert_eq!(store.prune_audit(21).unwrap(), 3, "made before 21");
    let left: Vec<_> = store
        .audit("a", 0, 10)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(left, [3]);
    assert_eq!(
        store.append_audit(&entry("a", 40, "Purge")).unwrap(),
        4,
        "numbers are not reused"
    );
    assert_eq!(store.prune_audit(u64::MAX).unwrap(), 3);
    assert_eq!(
        store.append_audit(&entry("b", 50, "Purge")).unwrap(),
        2,
        "not even when every entry was pruned"
    );
}

fn tenants_keep_their_limits(fresh: &dyn Fn() -> Store) {
    use crate::tenants::{TenantLimits, TenantRecord};
    let store = fresh();
    let acme = TenantRecord {
        id: "acme".into(),
        created_at: 5,
        limits: TenantLimits {
            tokens: Some(1000),
            cost: Some(2.5),
            ..TenantLimits::default()
        },
    };
    assert!(store.create_tenant(&acme).unwrap());
    assert!(
        !store.create_tenant(&acme).unwrap(),
        "a tenant is created once"
    );
    assert_eq!(store.tenant("acme").unwrap(), Some(acme.clone()));
    assert_eq!(store.tenant("globex").unwrap(), None);
    let tighter = TenantLimits {
        fuel: Some(7),
        ..TenantLimits::default()
    };
    assert!(store.set_tenant_limits("acme", &tighter).unwrap());
    assert!(!store.set_tenant_limits("globex", &tighter).unwrap());
    let kept = store.tenant("acme").unwrap().unwrap();
    assert_eq!((kept.limits, kept.created_at), (tighter, 5));
    assert_eq!(store.tenants().unwrap().len(), 1);
}
