//! Workflows: the file format, its parser, its validator and the plan it yields.
//!
//! Pure data and checks: this module does no I/O and knows nothing of
//! wasmtime, the scheduler or storage. Callers read the file and pass text in.

mod definition;
mod diagnostic;
mod governance;
mod limits;
mod parse;
mod plan;
mod retry;
mod validate;

pub use definition::{
    BreakerSpec, BudgetSpec, CacheSpec, Definition, FallbackSpec, FsSpec, GrantsSpec, InputSpec,
    InputType, LimitsSpec, PoliciesSpec, PolicyStepSpec, RetrySpec, TaskSpec, WaitSpec,
};
pub use diagnostic::{Diagnostic, WorkflowError};
pub use governance::{DEFAULT_POLICY_PLUGIN, policies as plan_policies};
pub use limits::{Limits, MAX_MEMORY, parse_bytes, parse_duration};
pub use parse::{MAX_WORKFLOW_BYTES, parse};
pub use plan::{
    Budget, Durability, Fallback, ForEach, GrantLimits, InputDecl, Plan, PlannedTask, Policies,
    PolicyStep, WaitPlan,
};
pub use validate::{MAX_TASKS, PluginCatalog, validate};

use crate::expr::Expressions;

/// Parses and validates workflow text read from `file`.
pub fn load(
    source: &str,
    file: &str,
    expressions: &Expressions,
    catalog: &dyn PluginCatalog,
) -> Result<Plan, WorkflowError> {
    validate(parse(source, file)?, file, expressions, catalog)
}
