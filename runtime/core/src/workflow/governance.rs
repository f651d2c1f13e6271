//! What a workflow says about its model calls, as written into the plan:
//! `budget:` (at least one limit, none negative) and `policies:` (the
//! [`Policies`] run around every model call: plugins the catalog knows,
//! `with:` a mapping that leaves `text` to the host), with a diagnostic for
//! every problem.

use super::definition::{BudgetSpec, PoliciesSpec, PolicyStepSpec};
use super::diagnostic::Diagnostic;
use super::parse::location_of;
use super::plan::{Budget, Policies, PolicyStep};
use super::validate::PluginCatalog;

/// The plugin a policy step uses when it does not say.
pub const DEFAULT_POLICY_PLUGIN: &str = "policy";

/// Checks `spec` and turns it into the plan's budget.
pub fn budget(spec: &BudgetSpec, problems: &mut Vec<Diagnostic>) -> Option<Budget> {
    if let Some(cost) = &spec.max_cost
        && !(cost.value.is_finite() && cost.value >= 0.0)
    {
        problems.push(
            Diagnostic::at(
                location_of(cost),
                "`max_cost` must be a number of dollars, at least 0",
            )
            .help("for example `max_cost: 0.50`"),
        );
        return None;
    }
    if spec.max_tokens.is_none() && spec.max_cost.is_none() {
        problems.push(
            Diagnostic::at(None, "`budget:` sets neither `max_tokens` nor `max_cost`")
                .help("for example `budget: { max_tokens: 100000, max_cost: 0.50 }`"),
        );
        return None;
    }
    Some(Budget {
        max_tokens: spec.max_tokens.as_ref().map(|t| t.value),
        max_cost: spec.max_cost.as_ref().map(|c| c.value),
    })
}

/// Checks `spec` and turns it into the plan's policies.
pub fn policies(
    spec: &PoliciesSpec,
    catalog: &dyn PluginCatalog,
    problems: &mut Vec<Diagnostic>,
) -> Policies {
    let mut steps = |list: &[PolicyStepSpec], stage: &str| -> Vec<PolicyStep> {
        list.iter()
            .enumerate()
            .filter_map(|(i, step)| {
                let uses = step
                    .uses
                    .as_ref()
                    .map_or(DEFAULT_POLICY_PLUGIN, |u| u.value.as_str());
                let at = step.uses.as_ref().and_then(location_of);
                if let Err(help) = catalog.check(uses) {
                    problems.push(
                        Diagnostic::at(
                            at,
                            format!("policy {} of `policies.{stage}` uses unknown plugin `{uses}`", i + 1),
                        )
                        .help(help),
                    );
                    return None;
                }
                let with = match step.with.as_ref().map(|w| &w.value) {
                    None => serde_json::Map::new(),
                    Some(serde_json::Value::Object(map)) if !map.contains_key("text") => map.clone(),
                    Some(_) => {
                        let at = step.with.as_ref().and_then(location_of);
                        problems.push(
                            Diagnostic::at(
                                at,
                                format!("`with:` of policy {} of `policies.{stage}` must be a mapping without `text`", i + 1),
                            )
                            .help("the host puts the prompt or the answer in `text`"),
                        );
                        return None;
                    }
                };
                Some(PolicyStep {
                    uses: uses.to_owned(),
                    with,
                })
            })
            .collect()
    };
    let before = steps(&spec.before, "before");
    let after = steps(&spec.after, "after");
    Policies { before, after }
}
