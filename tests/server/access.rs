//! Who may do what: the audit log, every RPC across tenants, tenants'
//! own limits, every RPC with every role and with bad keys.

use crate::harness::*;
use orchestrator_host_api::server::auth::{PERMISSIONS, Role, permitted};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_keeps_each_tenants_changes_and_refusals() {
    let server = Server::start();
    let acme_admin = server.client(&server.key("acme", "admin").await).await;
    let acme = server.client(&server.key("acme", "operator").await).await;
    let globex_admin = server.client(&server.key("globex", "admin").await).await;
    let host = server.client(&server.admin_key).await;

    let id = acme
        .executions()
        .start(start(WAITING, "audited"))
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    acme.executions()
        .cancel(pb::CancelRequest {
            execution_id: id.clone(),
        })
        .await
        .unwrap();
    // Refused: an operator may not register; globex may not reach acme.
    let refused = acme
        .workflows()
        .register(pb::RegisterRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let made_up = format!("oo_0123456789abcdef_{}", "0".repeat(64));
    let stranger = server.client(&made_up).await;
    let refused = stranger
        .executions()
        .list(pb::ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let audit = |client: &Client, tenant: &str, host: bool| {
        let mut admin = client.admin();
        let request = pb::ListAuditRequest {
            tenant: tenant.into(),
            host,
            ..pb::ListAuditRequest::default()
        };
        async move { admin.list_audit(request).await }
    };
    let entries = audit(&acme_admin, "", false)
        .await
        .unwrap()
        .into_inner()
        .entries;
    let seen: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e.rpc.as_str(), e.target.as_str(), e.outcome.as_str()))
        .collect();
    assert!(
        seen.contains(&("orchestrator.v1.Executions/Start", "audited", "OK")),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("orchestrator.v1.Executions/Cancel", "audited", "OK")),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(
            "orchestrator.v1.Workflows/Register",
            "",
            "PERMISSION_DENIED"
        )),
        "{seen:?}"
    );
    assert!(entries.iter().all(|e| e.tenant == "acme"), "{entries:?}");
    let numbers: Vec<u64> = entries.iter().map(|e| e.number).collect();
    assert_eq!(numbers, (1..=entries.len() as u64).collect::<Vec<_>>());
    // Reads are not audited.
    assert!(
        !seen.iter().any(|(rpc, ..)| rpc.ends_with("/ListAudit")),
        "{seen:?}"
    );

    // Globex's admin sees its own log only, and no other tenant's keys.
    let own = audit(&globex_admin, "", false)
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(own.iter().all(|e| e.tenant == "globex"), "{own:?}");
    for refused in [
        audit(&globex_admin, "acme", false).await.unwrap_err(),
        audit(&globex_admin, "", true).await.unwrap_err(),
        globex_admin
            .admin()
            .list_api_keys(pb::ListApiKeysRequest {
                tenant: "acme".into(),
            })
            .await
            .unwrap_err(),
        globex_admin
            .admin()
            .create_api_key(pb::CreateApiKeyRequest {
                tenant: "acme".into(),
                role: "admin".into(),
                name: "takeover".into(),
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    let acme_keys = host
        .admin()
        .list_api_keys(pb::ListApiKeysRequest {
            tenant: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    let revoke = globex_admin
        .admin()
        .revoke_api_key(pb::RevokeApiKeyRequest {
            key_id: acme_keys[0].key_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(revoke.code(), Code::NotFound, "{revoke:?}");
    let listed = globex_admin
        .admin()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(listed.iter().all(|k| k.tenant == "globex"), "{listed:?}");

    // The host's admin reads any tenant's log, and the host's own entries:
    // the call with a key that does not exist.
    let theirs = audit(&host, "acme", false)
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(theirs.len(), entries.len(), "{theirs:?}");
    let hosts = audit(&host, "", true).await.unwrap().into_inner().entries;
    assert!(
        hosts
            .iter()
            .any(|e| e.rpc == "orchestrator.v1.Executions/List"
                && e.outcome == "UNAUTHENTICATED"
                && e.tenant.is_empty()),
        "{hosts:?}"
    );
    // The refused takeover is in globex's log.
    let own = audit(&globex_admin, "", false)
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        own.iter()
            .any(|e| e.rpc == "orchestrator.v1.Admin/CreateApiKey"
                && e.outcome == "PERMISSION_DENIED"),
        "{own:?}"
    );
    // `runtime audit` asks the running server, and reads the store of a
    // stopped one: the same entries.
    let dir = server._dir.as_ref().unwrap().path().to_owned();
    let acme_admin_key = server.key("acme", "admin").await;
    let cli = |args: &[&str]| {
        let out = common::cli(&dir).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let remote = cli(&[
        "audit",
        "--server",
        &server.url,
        "--api-key",
        &acme_admin_key,
    ]);
    assert!(
        remote.contains("orchestrator.v1.Executions/Start audited OK"),
        "{remote}"
    );
    let mut server = server;
    assert!(server.terminate().success());
    let local = cli(&["audit", "--tenant", "acme"]);
    assert_eq!(local, remote);
    let json = cli(&["audit", "--tenant", "acme", "--json", "--limit", "1"]);
    let first: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(first["number"], 1);
    assert_eq!(first["tenant"], "acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rpc_reaches_another_tenants_data() {
    let server = Server::start();
    let acme = server.client(&server.key("acme", "admin").await).await;
    // Globex calls with an admin key: every RPC is permitted to it.
    let globex = server.client(&server.key("globex", "admin").await).await;

    // Acme's things: a waiting execution, a failed one with a dead letter,
    // a plugin, a registered workflow, keys, audit entries.
    let acme_grants = pb::Grants {
        http_hosts: vec!["api.acme.example".into()],
        ..pb::Grants::default()
    };
    acme.plugins()
        .install(tokio_stream::iter(guest_chunks(
            "guest",
            acme_grants.clone(),
        )))
        .await
        .unwrap();
    acme.workflows()
        .register(pb::RegisterRequest {
            text: WAITING.into(),
            label: String::new(),
        })
        .await
        .unwrap();
    acme.executions()
        .start(start(WAITING, "a-wait"))
        .await
        .unwrap();
    acme.executions()
        .start(start(BROKEN, "a-broken"))
        .await
        .unwrap();
    acme.executions()
        .await_result(pb::AwaitRequest {
            execution_id: "a-broken".into(),
            timeout_ms: 30_000,
        })
        .await
        .unwrap();
    let acme_key_id = acme
        .admin()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys[0]
        .key_id
        .clone();
    let acme_ids = ["a-wait", "a-broken"];

    let ex = || globex.executions();
    let not_found = |result: Result<(), tonic::Status>, rpc: &str| {
        let status = result.expect_err(rpc);
        assert!(
            matches!(status.code(), Code::NotFound | Code::PermissionDenied),
            "{rpc}: {status:?}"
        );
    };
    for (rpc, _) in PERMISSIONS {
        let rpc = *rpc;
        match rpc.trim_start_matches("orchestrator.v1.") {
            "Executions/Start" => {
                // Acme's registered workflow is not globex's; the same
                // execution id is globex's own, not acme's.
                let by_name = ex()
                    .start(pb::StartRequest {
                        workflow: "approval".into(),
                        ..pb::StartRequest::default()
                    })
                    .await
                    .map(drop);
                not_found(by_name, rpc);
                let own = ex()
                    .start(start(BROKEN, "a-wait"))
                    .await
                    .unwrap()
                    .into_inner();
                assert!(own.created, "a start saw acme's execution");
            }
            "Executions/Get" => {
                let r = ex()
                    .get(pb::GetRequest {
                        execution_id: "a-broken".into(),
                        ..pb::GetRequest::default()
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/List" => {
                let listed = ex()
                    .list(pb::ListRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                assert!(
                    listed.executions.iter().all(|e| e.workflow != "approval"),
                    "{listed:?}"
                );
            }
            "Executions/Watch" => {
                let r = ex()
                    .watch(pb::WatchRequest {
                        execution_id: "a-broken".into(),
                        from: 0,
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/AwaitResult" => {
                let r = ex()
                    .await_result(pb::AwaitRequest {
                        execution_id: "a-broken".into(),
                        timeout_ms: 1,
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/Signal" => {
                let r = ex()
                    .signal(pb::SignalRequest {
                        execution_id: "a-broken".into(),
                        name: "go".into(),
                        ..pb::SignalRequest::default()
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/Cancel" => {
                let r = ex()
                    .cancel(pb::CancelRequest {
                        execution_id: "a-broken".into(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/GetEvents" => {
                let r = ex()
                    .get_events(pb::GetEventsRequest {
                        execution_id: "a-broken".into(),
                        ..pb::GetEventsRequest::default()
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/Resume" => {
                let r = ex()
                    .resume(pb::ResumeRequest {
                        execution_id: "a-broken".into(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/ListDeadLetters" => {
                let listed = ex()
                    .list_dead_letters(pb::ListDeadLettersRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                assert!(
                    listed
                        .dead_letters
                        .iter()
                        .all(|l| !l.id.starts_with("a-broken")),
                    "{listed:?}"
                );
            }
            "Executions/GetDeadLetter" => {
                let r = ex()
                    .get_dead_letter(pb::GetDeadLetterRequest {
                        id: "a-broken/check".into(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/ReplayDeadLetter" => {
                let r = ex()
                    .replay_dead_letter(pb::ReplayDeadLetterRequest {
                        id: "a-broken/check".into(),
                        input_json: String::new(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/Purge" => {
                let r = ex()
                    .purge(pb::PurgeRequest {
                        ids: vec!["a-broken/check".into()],
                        all: false,
                    })
                    .await;
                not_found(r.map(drop), rpc);
                // `all` is all of the caller's own.
                ex().purge(pb::PurgeRequest {
                    ids: Vec::new(),
                    all: true,
                })
                .await
                .unwrap();
            }
            "Plugins/Install" => {
                // Globex's own `guest`, with other grants: acme's stays.
                globex
                    .plugins()
                    .install(tokio_stream::iter(guest_chunks(
                        "guest",
                        pb::Grants::default(),
                    )))
                    .await
                    .unwrap();
            }
            "Plugins/List" => {
                let listed = globex
                    .plugins()
                    .list(pb::ListPluginsRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                for p in &listed.plugins {
                    let granted = p.granted.clone().unwrap_or_default();
                    assert!(
                        !granted.http_hosts.contains(&"api.acme.example".into()),
                        "{p:?}"
                    );
                }
            }
            "Plugins/ListBreakers" => {
                let listed = globex
                    .plugins()
                    .list_breakers(pb::ListBreakersRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                assert!(listed.breakers.is_empty(), "{listed:?}");
            }
            "Plugins/Get" => {
                // Before globex installs its own, acme's is unknown to it;
                // afterwards it sees its own grants, not acme's.
                if let Ok(p) = globex
                    .plugins()
                    .get(pb::GetPluginRequest {
                        plugin: "guest".into(),
                    })
                    .await
                {
                    let granted = p.into_inner().granted.unwrap_or_default();
                    assert!(granted.http_hosts.is_empty(), "{granted:?}");
                }
            }
            "Plugins/Grant" => {
                let r = globex
                    .plugins()
                    .grant(pb::GrantRequest {
                        plugin: "nothing-of-globex".into(),
                        grants: Some(pb::Grants::default()),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Plugins/Remove" => {
                // Removes globex's own `guest`, if it installed one.
                let _ = globex
                    .plugins()
                    .remove(pb::RemovePluginRequest {
                        plugin: "guest@1.0.0".into(),
                    })
                    .await;
            }
            "Workflows/Register" => {
                let text = WAITING.replace("tasks:", "# globex's\ntasks:");
                let registered = globex
                    .workflows()
                    .register(pb::RegisterRequest {
                        text,
                        label: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(registered.version, 1, "acme's versions are not globex's");
            }
            "Workflows/List" => {
                let listed = globex
                    .workflows()
                    .list(pb::ListWorkflowsRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                assert!(listed.workflows.len() <= 1, "{listed:?}");
            }
            "Workflows/Get" => {
                if let Ok(got) = globex
                    .workflows()
                    .get(pb::GetWorkflowRequest {
                        name: "approval".into(),
                        version: 0,
                    })
                    .await
                {
                    assert!(got.into_inner().text.contains("globex's"));
                }
            }
            "Workflows/Validate" => {
                let text = "name: p\ntasks:\n  - { id: c, uses: 'workflow:approval@9' }\n";
                let r = globex
                    .workflows()
                    .validate(pb::ValidateRequest {
                        text: text.into(),
                        label: String::new(),
                    })
                    .await;
                assert_eq!(r.unwrap_err().code(), Code::InvalidArgument);
            }
            "Admin/CreateApiKey" => {
                let r = globex
                    .admin()
                    .create_api_key(pb::CreateApiKeyRequest {
                        tenant: "acme".into(),
                        role: "admin".into(),
                        name: "takeover".into(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Admin/ListApiKeys" => {
                let r = globex
                    .admin()
                    .list_api_keys(pb::ListApiKeysRequest {
                        tenant: "acme".into(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
                let own = globex
                    .admin()
                    .list_api_keys(pb::ListApiKeysRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                assert!(own.keys.iter().all(|k| k.tenant == "globex"), "{own:?}");
            }
            "Admin/RevokeApiKey" => {
                let r = globex
                    .admin()
                    .revoke_api_key(pb::RevokeApiKeyRequest {
                        key_id: acme_key_id.clone(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Admin/ListAudit" => {
                let r = globex
                    .admin()
                    .list_audit(pb::ListAuditRequest {
                        tenant: "acme".into(),
                        ..pb::ListAuditRequest::default()
                    })
                    .await;
                not_found(r.map(drop), rpc);
                let own = globex
                    .admin()
                    .list_audit(pb::ListAuditRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                assert!(own.entries.iter().all(|e| e.tenant == "globex"), "{own:?}");
            }
            "Admin/CreateTenant" => {
                let r = globex
                    .admin()
                    .create_tenant(pb::CreateTenantRequest {
                        tenant: "acme".into(),
                        limits: None,
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Admin/SetTenantLimits" => {
                let r = globex
                    .admin()
                    .set_tenant_limits(pb::SetTenantLimitsRequest {
                        tenant: "acme".into(),
                        limits: Some(pb::TenantLimits {
                            fuel: Some(1),
                            ..pb::TenantLimits::default()
                        }),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Admin/GetTenant" => {
                let r = globex
                    .admin()
                    .get_tenant(pb::GetTenantRequest {
                        tenant: "acme".into(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
                let own = globex
                    .admin()
                    .get_tenant(pb::GetTenantRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(own.id, "globex");
            }
            "Admin/ListTenants" => {
                let r = globex.admin().list_tenants(pb::ListTenantsRequest {}).await;
                not_found(r.map(drop), rpc);
            }
            other => panic!("the test does not try {other} across tenants"),
        }
    }

    // Acme's things are as they were.
    for id in acme_ids {
        acme.executions()
            .get(pb::GetRequest {
                execution_id: id.into(),
                ..pb::GetRequest::default()
            })
            .await
            .unwrap();
    }
    let waiting = acme
        .executions()
        .get(pb::GetRequest {
            execution_id: "a-wait".into(),
            ..pb::GetRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(waiting.status, "running");
    let letters = acme
        .executions()
        .list_dead_letters(pb::ListDeadLettersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(letters.dead_letters.len(), 1);
    let plugin = acme
        .plugins()
        .get(pb::GetPluginRequest {
            plugin: "guest".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plugin.granted.unwrap().http_hosts, acme_grants.http_hosts);
    let workflows = acme
        .workflows()
        .list(pb::ListWorkflowsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(workflows.workflows.len(), 1);
    let keys = acme
        .admin()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        keys.keys
            .iter()
            .all(|k| k.revoked_at_ms == 0 && k.tenant == "acme")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_own_limits_refuse_runs_with_which_limit_and_when() {
    use tonic_types::StatusExt;
    let server = Server::start();
    let host = server.client(&server.admin_key).await;
    let limits = |fuel: u64| pb::TenantLimits {
        fuel: Some(fuel),
        ..pb::TenantLimits::default()
    };
    let created = host
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            tenant: "capped".into(),
            limits: Some(limits(1)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.limits.unwrap().fuel, Some(1));
    assert!(created.created_at_ms > 0);
    let again = host
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            tenant: "capped".into(),
            limits: None,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let bad = host
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            tenant: "costly".into(),
            limits: Some(pb::TenantLimits {
                cost: Some(-1.0),
                ..pb::TenantLimits::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // A tenant's admin may read its own tenant, not set its limits.
    let capped_admin = server.client(&server.key("capped", "admin").await).await;
    let refused = capped_admin
        .admin()
        .set_tenant_limits(pb::SetTenantLimitsRequest {
            tenant: "capped".into(),
            limits: Some(limits(1_000_000_000)),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // The first run starts (nothing spent yet) and spends fuel; the next
    // is refused, naming the limit and when the period ends.
    let capped = server.client(&server.key("capped", "operator").await).await;
    let flow = "name: small\ntasks:\n  - { id: add, uses: transform, with: { script: '1 + 1' } }\n";
    let id = capped
        .executions()
        .start(start(flow, ""))
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    capped
        .executions()
        .await_result(pb::AwaitRequest {
            execution_id: id,
            timeout_ms: 30_000,
        })
        .await
        .unwrap();
    let refused = capped
        .executions()
        .start(start(flow, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let details = refused.get_error_details();
    let violation = &details.quota_failure().expect("which limit").violations[0];
    assert_eq!(violation.subject, "quotas.fuel");
    let wait = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("when to retry");
    assert!(
        wait <= std::time::Duration::from_secs(24 * 3600),
        "{wait:?}"
    );
    let tenant = capped_admin
        .admin()
        .get_tenant(pb::GetTenantRequest::default())
        .await
        .unwrap()
        .into_inner();
    let usage = tenant.usage.unwrap();
    assert!(usage.fuel > 1, "{usage:?}");
    assert!(usage.period_start_ms < usage.period_end_ms);
    assert_eq!(tenant.in_force.unwrap().fuel, Some(1));

    // Raised, the tenant runs again; other tenants were never held.
    host.admin()
        .set_tenant_limits(pb::SetTenantLimitsRequest {
            tenant: "capped".into(),
            limits: Some(limits(1_000_000_000)),
        })
        .await
        .unwrap();
    capped.executions().start(start(flow, "")).await.unwrap();
    let free = server.client(&server.key("free", "operator").await).await;
    free.executions().start(start(flow, "")).await.unwrap();
    let listed = host
        .admin()
        .list_tenants(pb::ListTenantsRequest {})
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.tenants.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["capped"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_checks_the_key_and_the_role() {
    let server = Server::start();
    // The admin is the host's (tenant `default`): some Admin RPCs are the
    // host's alone. A tenant's admin is held to its tenant in the tests
    // across tenants.
    let mut keys = Vec::new();
    for role in Role::ALL {
        let tenant = if role == Role::Admin {
            "default"
        } else {
            "acme"
        };
        keys.push((role, server.key(tenant, role.as_str()).await));
    }
    for (rpc, _) in PERMISSIONS {
        for (role, key) in &keys {
            let code = call(&server.client(key).await, rpc).await;
            if permitted(rpc, *role) {
                assert!(
                    !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                    "{rpc} as {}: {code:?}",
                    role.as_str()
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{rpc} as {}", role.as_str());
            }
        }
        // No key, a made-up key, a revoked key: refused, streams included.
        let code = call(&server.client("").await, rpc).await;
        assert_eq!(code, Code::Unauthenticated, "{rpc} without a key");
        let made_up = format!("oo_0123456789abcdef_{}", "0".repeat(64));
        let code = call(&server.client(&made_up).await, rpc).await;
        assert_eq!(code, Code::Unauthenticated, "{rpc} with a made-up key");
    }
    let admin = server.client(&server.admin_key).await;
    let (_, operator) = &keys[1];
    let id = operator.split('_').nth(1).unwrap().to_owned();
    admin
        .admin()
        .revoke_api_key(pb::RevokeApiKeyRequest { key_id: id })
        .await
        .unwrap();
    for rpc in [
        "orchestrator.v1.Executions/Start",
        "orchestrator.v1.Executions/Watch",
    ] {
        let code = call(&server.client(operator).await, rpc).await;
        assert_eq!(code, Code::Unauthenticated, "{rpc} with a revoked key");
    }
    // The keys listed carry no secret.
    let listed = admin
        .admin()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 5, "the bootstrap key and four more");
    let text = format!("{listed:?}");
    for (_, key) in &keys {
        assert!(!text.contains(key.rsplit('_').next().unwrap()));
    }
}

/// Calls `rpc` with an empty request as `client`; its status code (`Ok`
/// when it answered).
async fn call(client: &Client, rpc: &str) -> Code {
    let ex = client.executions();
    let admin = client.admin();
    let result = match rpc {
        "orchestrator.v1.Executions/Start" => ex.clone().start(start("", "")).await.map(|_| ()),
        "orchestrator.v1.Executions/Get" => {
            ex.clone().get(pb::GetRequest::default()).await.map(|_| ())
        }
        "orchestrator.v1.Executions/List" => ex
            .clone()
            .list(pb::ListRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/Watch" => ex
            .clone()
            .watch(pb::WatchRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/AwaitResult" => ex
            .clone()
            .await_result(pb::AwaitRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/Signal" => ex
            .clone()
            .signal(pb::SignalRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/Cancel" => ex
            .clone()
            .cancel(pb::CancelRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/GetEvents" => ex
            .clone()
            .get_events(pb::GetEventsRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/Resume" => ex
            .clone()
            .resume(pb::ResumeRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/ListDeadLetters" => ex
            .clone()
            .list_dead_letters(pb::ListDeadLettersRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/GetDeadLetter" => ex
            .clone()
            .get_dead_letter(pb::GetDeadLetterRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/ReplayDeadLetter" => ex
            .clone()
            .replay_dead_letter(pb::ReplayDeadLetterRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/Purge" => ex
            .clone()
            .purge(pb::PurgeRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Plugins/Install" => client
            .plugins()
            .install(tokio_stream::iter([pb::InstallChunk::default()]))
            .await
            .map(|_| ()),
        "orchestrator.v1.Plugins/Get" => client
            .plugins()
            .get(pb::GetPluginRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Plugins/List" => client
            .plugins()
            .list(pb::ListPluginsRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Plugins/ListBreakers" => client
            .plugins()
            .list_breakers(pb::ListBreakersRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Plugins/Grant" => client
            .plugins()
            .grant(pb::GrantRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Plugins/Remove" => client
            .plugins()
            .remove(pb::RemovePluginRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Workflows/Register" => client
            .workflows()
            .register(pb::RegisterRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Workflows/List" => client
            .workflows()
            .list(pb::ListWorkflowsRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Workflows/Get" => client
            .workflows()
            .get(pb::GetWorkflowRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Workflows/Validate" => client
            .workflows()
            .validate(pb::ValidateRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/CreateApiKey" => admin
            .clone()
            .create_api_key(pb::CreateApiKeyRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/ListApiKeys" => admin
            .clone()
            .list_api_keys(pb::ListApiKeysRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/RevokeApiKey" => admin
            .clone()
            .revoke_api_key(pb::RevokeApiKeyRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/ListAudit" => admin
            .clone()
            .list_audit(pb::ListAuditRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/CreateTenant" => admin
            .clone()
            .create_tenant(pb::CreateTenantRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/SetTenantLimits" => admin
            .clone()
            .set_tenant_limits(pb::SetTenantLimitsRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/GetTenant" => admin
            .clone()
            .get_tenant(pb::GetTenantRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/ListTenants" => admin
            .clone()
            .list_tenants(pb::ListTenantsRequest::default())
            .await
            .map(|_| ()),
        other => panic!("the test does not know how to call {other}"),
    };
    match result {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}
