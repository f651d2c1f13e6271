//! The policies a run prepares around its model calls: which tasks are
//! model calls (by what their plugin is), and the policy plugins (the
//! host's, a parent's, the workflow's own) each linked under a key of its
//! own.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{LoadedWorkflow, Runner, ServiceError};
use crate::governance::{PolicyHook, PolicyHooks};
use crate::plugin::{Allowed, Resolved};
use orchestrator_core::scheduler::{PluginKey, PolicyStage};
use orchestrator_core::tenant::TenantId;
use orchestrator_core::workflow::Policies;
use orchestrator_sandbox::Compiled;
use orchestrator_store::Store;

/// The digests of the components the operator marked as calling models
/// (any record of them: every name for the same component counts).
pub(super) fn model_digests(
    store: &Store,
    tenant: &TenantId,
) -> Result<HashSet<String>, ServiceError> {
    Ok(store
        .plugins(tenant.as_str())?
        .into_iter()
        .filter(|r| r.grants.model)
        .map(|r| r.digest)
        .collect())
}

/// Whether `uses` names one of the model components `models`.
pub(super) fn is_model(models: &HashSet<String>, workflow: &LoadedWorkflow, uses: &str) -> bool {
    matches!(
        workflow.catalog.resolve(uses),
        Ok(Resolved::Installed(record)) if models.contains(&record.digest)
    )
}

impl Runner {
    /// The policies around this workflow's model calls: those it inherits
    /// (the host's, then its parents' when it runs as a sub-workflow),
    /// then its own `policies:`. Each is prepared as a plugin of its own
    /// (keys `#policy-inherited-<stage>-<i>`, then the workflow's
    /// `#policy-<stage>-<i>`). They guard every task whose plugin the
    /// operator marked as calling models (`--model`; the built-in `llm` is),
    /// by what the plugin is, however `uses:` names it.
    pub(super) fn policy_hooks(
        &self,
        workflow: &LoadedWorkflow,
        store: &Store,
        inherited: &Policies,
        models: &HashSet<String>,
        compiled: &mut HashMap<String, (Compiled, Allowed)>,
        plugins: &mut HashMap<String, orchestrator_sandbox::Plugin>,
    ) -> Result<PolicyHooks, ServiceError> {
        let own = &workflow.plan.policies;
        let mut hooks = PolicyHooks::default();
        if [&inherited.before, &inherited.after, &own.before, &own.after]
            .iter()
            .all(|steps| steps.is_empty())
        {
            return Ok(hooks);
        }
        hooks.guarded = workflow
            .plugin_slots()
            .into_iter()
            .filter(|(_, _, uses)| is_model(models, workflow, uses))
            .map(|(key, _, _)| key)
            .collect();
        let stages = [
            (
                true,
                PolicyStage::Before,
                "the host's or a parent's `policies.before`",
                &inherited.before,
            ),
            (
                true,
                PolicyStage::After,
                "the host's or a parent's `policies.after`",
                &inherited.after,
            ),
            (false, PolicyStage::Before, "`policies.before`", &own.before),
            (false, PolicyStage::After, "`policies.after`", &own.after),
        ];
        for (inherited, stage, whose, steps) in stages {
            for (i, step) in steps.iter().enumerate() {
                let in_policy =
                    |e: String| ServiceError::Plugin(format!("policy {} of {whose}: {e}", i + 1));
                if !compiled.contains_key(&step.uses) {
                    let resolved = workflow.catalog.resolve(&step.uses).map_err(in_policy)?;
                    let loaded = self.load_plugin(store, &workflow.tenant, resolved, &step.uses)?;
                    compiled.insert(step.uses.clone(), loaded);
                }
                let (component, allowed) = &compiled[&step.uses];
                let plugin =
                    self.sandbox
                        .link(component, allowed.clone(), Arc::clone(&self.secrets))?;
                let key = PluginKey::Policy {
                    inherited,
                    stage,
                    index: i,
                }
                .to_string();
                plugins.insert(key.clone(), plugin);
                let hook = PolicyHook {
                    key,
                    uses: step.uses.clone(),
                    with: step.with.clone(),
                };
                if stage == PolicyStage::Before {
                    hooks.before.push(hook);
                } else {
                    hooks.after.push(hook);
                }
            }
        }
        Ok(hooks)
    }
}
