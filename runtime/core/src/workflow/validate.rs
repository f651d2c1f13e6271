//! Turns a [`Definition`] into a [`Plan`], or lists everything wrong with it.
//!
//! Checks: task ids (well formed, unique), `needs` (known), `uses` (a plugin
//! the catalog knows), limits (parse), every Rhai expression (compiles, reads
//! only declared inputs and tasks that finish before it), and cycles (named).
//! All problems are reported at once, each with its line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::definition::{Definition, GrantsSpec, LimitsSpec, TaskSpec};
use super::diagnostic::{Diagnostic, WorkflowError};
use super::governance::{budget, policies};
use super::limits::{Limits, MAX_DEADLINE, MAX_MEMORY, MAX_OUTPUT, parse_bytes, parse_duration};
use super::parse::location_of;
use super::plan::{
    Fallback, ForEach, GrantLimits, InputDecl, Plan, PlannedTask, WaitPlan, type_matches, type_name,
};
use super::retry::{breaker_policy, retry_policy};
use crate::expr::{Expression, Expressions, Template};
use crate::fault::RetryPolicy;
use crate::graph::Dag;

/// The most tasks a workflow may have: a plan, its DAG and its run state
/// stay bounded in memory.
pub const MAX_TASKS: usize = 100_000;

/// Tells the validator which `uses:` values name a plugin.
pub trait PluginCatalog {
    /// `Ok` if `uses` names a plugin; otherwise advice on what would.
    fn check(&self, uses: &str) -> Result<(), String>;

    /// The input schema of the plugin `uses` names, when it has one and
    /// this catalog knows it: `with:` values known before the run are
    /// checked against it.
    fn input_schema(&self, _uses: &str) -> Option<crate::plugin::Schema> {
        None
    }
}

/// Validates `definition`, read from `file`.
pub fn validate(
    definition: Definition,
    file: &str,
    expressions: &Expressions,
    catalog: &dyn PluginCatalog,
) -> Result<Plan, WorkflowError> {
    let mut v = Validator {
        expressions,
        problems: Vec::new(),
    };
    let plan = v.plan(definition, catalog);
    if let (true, Some(plan)) = (v.problems.is_empty(), plan) {
        return Ok(plan);
    }
    v.problems.sort_by_key(|d| d.location);
    Err(WorkflowError {
        file: file.to_owned(),
        diagnostics: v.problems,
    })
}

struct Validator<'a> {
    expressions: &'a Expressions,
    problems: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn plan(&mut self, def: Definition, catalog: &dyn PluginCatalog) -> Option<Plan> {
        if def.tasks.len() > MAX_TASKS {
            self.problems.push(
                Diagnostic::at(
                    None,
                    format!(
                        "workflow `{}` has {} tasks; at most {MAX_TASKS} are allowed",
                        def.name,
                        def.tasks.len()
                    ),
                )
                .help("run one task over a list with `for_each`, or split the workflow"),
            );
        }
        if def.tasks.is_empty() {
            self.problems.push(
                Diagnostic::at(None, format!("workflow `{}` has no tasks", def.name))
                    .help("add a `tasks:` list with at least one task"),
            );
        }
        let inputs = def
            .inputs
            .into_iter()
            .map(|(name, spec)| {
                if let Some(default) = spec
                    .default
                    .as_ref()
                    .filter(|d| !type_matches(spec.kind, d))
                {
                    self.problems.push(Diagnostic::at(
                        None,
                        format!(
                            "the default of input `{name}` must be {}, not {default}",
                            type_name(spec.kind)
                        ),
                    ));
                }
                let decl = InputDecl {
                    kind: spec.kind,
                    default: spec.default,
                };
                (name, decl)
            })
            .collect::<indexmap::IndexMap<_, _>>();

        // Ids first, so that `needs` and expressions can refer to any task.
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, task) in def.tasks.iter().enumerate() {
            let id = &task.id.value;
            if !is_identifier(id) {
                self.problems.push(
                    Diagnostic::at(location_of(&task.id), format!("task id `{id}` is not a name"))
                        .help("use letters, digits and `_`, not starting with a digit, so expressions can say `tasks.<id>`"),
                );
            } else if might_be_reserved(id)
                && self.expressions.compile(&format!("tasks.{id}")).is_err()
            {
                self.problems.push(
                    Diagnostic::at(
                        location_of(&task.id),
                        format!("task id `{id}` is a word the expression language reserves, so expressions cannot say `tasks.{id}`"),
                    )
                    .help(format!("rename it, for example `{id}_step`")),
                );
            }
            if let Some(&first) = index.get(id.as_str()) {
                let first_line = location_of(&def.tasks[first].id).map_or(0, |l| l.0);
                self.problems.push(
                    Diagnostic::at(
                        location_of(&task.id),
                        format!("task id `{id}` is used twice"),
                    )
                    .help(format!(
                        "the first `{id}` is on line {first_line}; rename one of them"
                    )),
                );
            } else {
                index.insert(id, i);
            }
        }

        let workflow_limits = self.limits(&def.limits, Limits::default());
        let workflow_retry = Arc::new(retry_policy(
            &def.retry,
            &RetryPolicy::default(),
            self.expressions,
            &mut self.problems,
        ));
        let workflow_timeout = self.duration(def.timeout.as_ref(), || {
            "`timeout` of the workflow".to_owned()
        });
        let workflow_breaker = breaker_policy(def.breaker.as_ref(), None, &mut self.problems);
        let mut tasks = Vec::with_capacity(def.tasks.len());
        let mut needs = Vec::with_capacity(def.tasks.len());
        for task in &def.tasks {
            let id = &task.id.value;
            let (uses, wait) = self.executor(task, catalog);
            let mut deps = Vec::with_capacity(task.needs.len());
            for need in &task.needs {
                match index.get(need.value.as_str()) {
                    Some(&dep) if !deps.contains(&dep) => deps.push(dep),
                    Some(_) => {}
                    None => self.problems.push(
                        Diagnostic::at(
                            location_of(need),
                            format!("task `{id}` needs unknown task `{}`", need.value),
                        )
                        .help(known_tasks(&index)),
                    ),
                }
            }
            needs.push(deps.clone());
            let when = task
                .when
                .as_ref()
                .and_then(|w| self.condition(w, &format!("`when` of task `{id}`")));
            let input = self.input(&format!("task `{id}`"), &task.with);
            if let Some(named) = task.uses.as_ref().filter(|_| wait.is_none()) {
                self.check_input(id, named, &task.with, &input, catalog);
            }
            // Most tasks inherit the workflow's policy whole: shared, not copied.
            let retry = if task.retry.is_empty() {
                Arc::clone(&workflow_retry)
            } else {
                Arc::new(retry_policy(
                    &task.retry,
                    &workflow_retry,
                    self.expressions,
                    &mut self.problems,
                ))
            };
            let fallback = task.fallback.as_ref().map(|f| {
                let uses = match &f.uses {
                    Some(uses) => {
                        self.check_plugin(id, uses, catalog);
                        uses.value.clone()
                    }
                    None => uses.clone(),
                };
                let input = match &f.with {
                    Some(with) => self.input(&format!("the fallback of task `{id}`"), with),
                    None => input.clone(),
                };
                Fallback { uses, input }
            });
            if wait.is_some() && (fallback.is_some() || task.retry.max_attempts.is_some()) {
                self.problems.push(
                    Diagnostic::at(
                        location_of(&task.id),
                        format!("task `{id}` waits for a signal; it has no attempts to retry or fall back from"),
                    )
                    .help("give the wait a `timeout:` and a `default:` instead"),
                );
            }
            tasks.push(PlannedTask {
                id: id.clone(),
                uses,
                wait,
                needs: deps,
                when,
                input,
                reads: Vec::new(),
                limits: self.limits(&task.limits, workflow_limits),
                grants: grant_limits(&task.grants, &def.grants),
                retry,
                timeout: self.duration(task.timeout.as_ref(), || {
                    format!("`timeout` of task `{id}`")
                }),
                fallback,
                default: task.default.clone(),
                continue_on_error: task.continue_on_error,
                for_each: self.for_each(task),
                breaker: breaker_policy(
                    task.breaker.as_ref(),
                    workflow_breaker,
                    &mut self.problems,
                ),
                priority: task.priority,
                cache: task.cache.as_ref().and_then(|cache| {
                    self.duration(Some(&cache.ttl), || format!("`cache.ttl` of task `{id}`"))
                }),
            });
        }

        let outputs: Vec<(String, Template)> = def
            .outputs
            .iter()
            .map(|(name, value)| {
                let template = self.template(value, &format!("output `{name}`"));
                (name.clone(), template)
            })
            .collect();

        let dag = match Dag::build(tasks.len(), &needs) {
            Ok(dag) => Some(dag),
            Err(cycle) => {
                let names: Vec<&str> = cycle.iter().map(|&i| tasks[i].id.as_str()).collect();
                let steps: Vec<String> = names
                    .windows(2)
                    .map(|pair| format!("`{}` needs `{}`", pair[0], pair[1]))
                    .collect();
                self.problems.push(
                    Diagnostic::at(
                        location_of(&def.tasks[cycle[0]].id),
                        format!("tasks form a cycle: {}", names.join(" -> ")),
                    )
                    .help(format!("{}; remove one of these needs", steps.join(", "))),
                );
                None
            }
        };

        // What expressions read: declared inputs, and tasks that finish first.
        for (i, task) in def.tasks.iter().enumerate() {
            let planned = &tasks[i];
            let mut exprs: Vec<&Expression> = planned.input.expressions();
            exprs.extend(planned.when.as_ref());
            exprs.extend(planned.for_each.as_ref().map(|f| &f.items));
            if let Some(fallback) = &planned.fallback {
                exprs.extend(fallback.input.expressions());
            }
            let mut reads = Vec::new();
            for expr in exprs {
                self.check_input_reads(
                    expr,
                    &format!("task `{}`", planned.id),
                    &inputs,
                    location_of(&task.id),
                );
                for read in expr.reads() {
                    let Some(&r) = index.get(read.as_str()) else {
                        self.problems.push(
                            Diagnostic::at(
                                location_of(&task.id),
                                format!(
                                    "task `{}` reads `tasks.{read}`, which does not exist",
                                    planned.id
                                ),
                            )
                            .help(known_tasks(&index)),
                        );
                        continue;
                    };
                    let finishes_first = planned.needs.contains(&r)
                        || dag.as_ref().is_some_and(|dag| dag.precedes(r, i));
                    if !finishes_first && dag.is_some() {
                        self.problems.push(
                            Diagnostic::at(
                                location_of(&task.id),
                                format!(
                                    "task `{}` reads `tasks.{read}` but does not wait for it",
                                    planned.id
                                ),
                            )
                            .help(format!("add `{read}` to the `needs` of `{}`", planned.id)),
                        );
                    }
                    if !reads.contains(&r) {
                        reads.push(r);
                    }
                }
            }
            tasks[i].reads = reads;
        }
        for ((name, template), (_, value)) in outputs.iter().zip(&def.outputs) {
            for expr in template.expressions() {
                self.check_input_reads(
                    expr,
                    &format!("output `{name}`"),
                    &inputs,
                    location_of(value),
                );
                for read in expr.reads() {
                    if !index.contains_key(read.as_str()) {
                        self.problems.push(
                            Diagnostic::at(
                                location_of(value),
                                format!(
                                    "output `{name}` reads `tasks.{read}`, which does not exist"
                                ),
                            )
                            .help(known_tasks(&index)),
                        );
                    }
                }
            }
        }

        let concurrency = def.concurrency.as_ref().map(|c| c.value);
        if concurrency == Some(0) {
            let at = def.concurrency.as_ref().and_then(location_of);
            self.problems.push(
                Diagnostic::at(at, "`concurrency` must be at least 1")
                    .help("leave it out to use the default"),
            );
        }
        Some(Plan {
            name: def.name,
            inputs,
            tasks,
            dag: dag?,
            outputs,
            concurrency,
            durability: def.durability,
            timeout: workflow_timeout,
            budget: def
                .budget
                .as_ref()
                .and_then(|b| budget(b, &mut self.problems)),
            policies: policies(&def.policies, catalog, &mut self.problems),
        })
    }

    fn check_input_reads(
        &mut self,
        expr: &Expression,
        reader: &str,
        inputs: &indexmap::IndexMap<String, InputDecl>,
        at: Option<(u64, u64)>,
    ) {
        for name in expr.input_reads() {
            if !inputs.contains_key(name) {
                let declared: Vec<&str> = inputs.keys().map(String::as_str).collect();
                self.problems.push(
                    Diagnostic::at(
                        at,
                        format!("{reader} reads `inputs.{name}`, which is not declared"),
                    )
                    .help(if declared.is_empty() {
                        format!("declare it under `inputs:` (`{name}: {{ type: string }}`)")
                    } else {
                        format!("declared inputs: {}", declared.join(", "))
                    }),
                );
            }
        }
    }

    /// `what` names the field in the message, made only for an error.
    fn duration(
        &mut self,
        text: Option<&Spanned<String>>,
        what: impl FnOnce() -> String,
    ) -> Option<Duration> {
        let text = text?;
        parse_duration(&text.value)
            .map_err(|e| {
                self.problems.push(Diagnostic::at(
                    location_of(text),
                    format!("{}: {e}", what()),
                ));
            })
            .ok()
    }

    /// `for_each:` and the fields that only make sense with it.
    fn for_each(&mut self, task: &TaskSpec) -> Option<ForEach> {
        let id = &task.id.value;
        let Some(items) = &task.for_each else {
            for (field, at) in [
                (
                    "concurrency",
                    task.concurrency.as_ref().and_then(location_of),
                ),
                (
                    "min_success_ratio",
                    task.min_success_ratio.as_ref().and_then(location_of),
                ),
            ] {
                if at.is_some() {
                    self.problems.push(
                        Diagnostic::at(at, format!("task `{id}` has `{field}` but no `for_each`"))
                            .help("these settings belong to a task that runs once per list item"),
                    );
                }
            }
            return None;
        };
        if task.wait.is_some() {
            self.problems.push(
                Diagnostic::at(
                    location_of(items),
                    format!("task `{id}` waits for a signal; it cannot run `for_each`"),
                )
                .help("put the `for_each` on a task that uses a plugin"),
            );
        }
        let concurrency = task.concurrency.as_ref().map_or(8, |c| c.value);
        if concurrency == 0 {
            self.problems.push(
                Diagnostic::at(
                    task.concurrency.as_ref().and_then(location_of),
                    "`concurrency` must be at least 1",
                )
                .help("leave it out to run 8 items at once"),
            );
        }
        let ratio = task.min_success_ratio.as_ref().map_or(1.0, |r| r.value);
        if !(0.0..=1.0).contains(&ratio) {
            self.problems.push(
                Diagnostic::at(
                    task.min_success_ratio.as_ref().and_then(location_of),
                    "`min_success_ratio` must be between 0 and 1",
                )
                .help("0.9 lets a tenth of the items fail"),
            );
        }
        let items = self.condition(items, &format!("`for_each` of task `{id}`"))?;
        Some(ForEach {
            items,
            concurrency: concurrency.max(1),
            min_success_ratio: ratio,
        })
    }

    fn check_plugin(&mut self, id: &str, uses: &Spanned<String>, catalog: &dyn PluginCatalog) {
        if let Err(help) = catalog.check(&uses.value) {
            self.problems.push(
                Diagnostic::at(
                    location_of(uses),
                    format!("task `{id}` uses unknown plugin `{}`", uses.value),
                )
                .help(help),
            );
        }
    }

    /// Checks the `with:` values known before the run against the input
    /// schema of the plugin `uses` names, if it has one.
    fn check_input(
        &mut self,
        id: &str,
        uses: &Spanned<String>,
        with: &indexmap::IndexMap<String, Spanned<serde_json::Value>>,
        input: &Template,
        catalog: &dyn PluginCatalog,
    ) {
        let Some(schema) = catalog.input_schema(&uses.value) else {
            return;
        };
        let known = match input {
            Template::Literal(serde_json::Value::Object(all)) => all.clone(),
            Template::Object(fields) => fields
                .iter()
                .filter_map(|(k, t)| match t {
                    Template::Literal(v) => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .collect(),
            _ => return,
        };
        let given: Vec<&str> = with.keys().map(String::as_str).collect();
        let Some(problems) = schema.static_violations(&known, &given) else {
            return;
        };
        // At the first field a problem names, else at `uses:`.
        let field = problems
            .strip_prefix('/')
            .and_then(|rest| rest.split(['/', ':']).next())
            .and_then(|name| with.get(name));
        let location = field.and_then(location_of).or_else(|| location_of(uses));
        self.problems.push(
            Diagnostic::at(
                location,
                format!(
                    "`with:` of task `{id}` does not fit the input schema of `{}`: {problems}",
                    uses.value
                ),
            )
            .help(format!(
                "`runtime plugins show {}` prints the schema",
                uses.value
            )),
        );
    }

    fn input(
        &mut self,
        whose: &str,
        with: &indexmap::IndexMap<String, Spanned<serde_json::Value>>,
    ) -> Template {
        let mut fields = Vec::with_capacity(with.len());
        for (key, value) in with {
            let what = format!("`with.{key}` of {whose}");
            fields.push((key.clone(), self.template(value, &what)));
        }
        if fields
            .iter()
            .all(|(_, t)| matches!(t, Template::Literal(_)))
        {
            let object = fields
                .into_iter()
                .map(|(k, t)| match t {
                    Template::Literal(v) => (k, v),
                    _ => unreachable!("all fields are literals"),
                })
                .collect();
            Template::Literal(serde_json::Value::Object(object))
        } else {
            Template::Object(fields)
        }
    }

    fn template(&mut self, value: &Spanned<serde_json::Value>, what: &str) -> Template {
        self.expressions
            .compile_template(&value.value)
            .unwrap_or_else(|e| {
                self.problems.push(
                    Diagnostic::at(location_of(value), format!("{what} does not compile: {e}"))
                        .help(
                            "expressions are Rhai, inside `${{ ... }}`; see https://rhai.rs/book/",
                        ),
                );
                Template::Literal(serde_json::Value::Null)
            })
    }

    fn condition(&mut self, when: &Spanned<String>, what: &str) -> Option<Expression> {
        let source = strip_template(&when.value);
        self.expressions
            .compile(source)
            .map_err(|e| {
                self.problems.push(
                    Diagnostic::at(location_of(when), format!("{what} does not compile: {e}"))
                        .help("a condition is one Rhai expression, for example `inputs.count > 3`"),
                );
            })
            .ok()
    }

    /// What runs the task: a plugin the catalog knows, or a wait.
    fn executor(
        &mut self,
        task: &TaskSpec,
        catalog: &dyn PluginCatalog,
    ) -> (String, Option<WaitPlan>) {
        let id = &task.id.value;
        match (&task.uses, &task.wait) {
            (Some(uses), None) => {
                self.check_plugin(id, uses, catalog);
                (uses.value.clone(), None)
            }
            (None, Some(wait)) => {
                let signal = &wait.signal.value;
                if !is_identifier(signal) {
                    self.problems.push(
                        Diagnostic::at(
                            location_of(&wait.signal),
                            format!("task `{id}` waits for `{signal}`, which is not a signal name"),
                        )
                        .help("use letters, digits and `_`"),
                    );
                }
                let timeout = wait.timeout.as_ref().and_then(|t| {
                    parse_duration(&t.value)
                        .map_err(|e| self.problems.push(Diagnostic::at(location_of(t), e)))
                        .ok()
                });
                let plan = WaitPlan {
                    signal: signal.clone(),
                    timeout,
                    default: wait.default.clone(),
                };
                (format!("wait:{signal}"), Some(plan))
            }
            (uses, _) => {
                let (message, help) = if uses.is_some() {
                    (
                        "has both `uses:` and `wait:`",
                        "a task either runs a plugin or waits; split it in two",
                    )
                } else {
                    (
                        "has neither `uses:` nor `wait:`",
                        "name the plugin that runs it (`uses: transform`), or wait for a signal (`wait: { signal: approve }`)",
                    )
                };
                self.problems.push(
                    Diagnostic::at(location_of(&task.id), format!("task `{id}` {message}"))
                        .help(help),
                );
                (String::new(), None)
            }
        }
    }

    fn limits(&mut self, spec: &LimitsSpec, inherited: Limits) -> Limits {
        let mut limits = inherited;
        if let Some(fuel) = &spec.fuel {
            limits.fuel = fuel.value;
        }
        if let Some(memory) = &spec.memory {
            match parse_bytes(&memory.value) {
                Ok(bytes) if bytes > MAX_MEMORY => self.problems.push(
                    Diagnostic::at(
                        location_of(memory),
                        format!(
                            "a memory cap of {} is more than a plugin can have",
                            memory.value
                        ),
                    )
                    .help("the largest is 4GiB"),
                ),
                Ok(bytes) => limits.memory = bytes,
                Err(e) => self.problems.push(Diagnostic::at(location_of(memory), e)),
            }
        }
        if let Some(deadline) = &spec.deadline {
            match parse_duration(&deadline.value) {
                Ok(d) if d > MAX_DEADLINE => self.problems.push(
                    Diagnostic::at(
                        location_of(deadline),
                        format!(
                            "a deadline of {} is longer than one attempt may run",
                            deadline.value
                        ),
                    )
                    .help(
                        "the longest is 24h; bound a longer task with `timeout:` across attempts",
                    ),
                ),
                Ok(d) => limits.deadline = d,
                Err(e) => self.problems.push(Diagnostic::at(location_of(deadline), e)),
            }
        }
        if let Some(output) = &spec.output {
            match parse_bytes(&output.value) {
                Ok(bytes) if bytes > MAX_OUTPUT => self.problems.push(
                    Diagnostic::at(
                        location_of(output),
                        format!(
                            "an output limit of {} is more than a task may return",
                            output.value
                        ),
                    )
                    .help("the largest is 1GiB"),
                ),
                Ok(bytes) => limits.output = bytes,
                Err(e) => self.problems.push(Diagnostic::at(location_of(output), e)),
            }
        }
        limits
    }
}

/// A task's `grants:`, each list falling back to the workflow's.
fn grant_limits(task: &GrantsSpec, workflow: &GrantsSpec) -> GrantLimits {
    let pick = |own: &Option<Vec<String>>, inherited: &Option<Vec<String>>| {
        own.clone().or_else(|| inherited.clone())
    };
    GrantLimits {
        http: pick(&task.http, &workflow.http),
        env: pick(&task.env, &workflow.env),
        secrets: pick(&task.secrets, &workflow.secrets),
        filesystem: task
            .filesystem
            .as_ref()
            .or(workflow.filesystem.as_ref())
            .map(|dirs| dirs.iter().map(|d| (d.path.clone(), d.writable)).collect()),
    }
}

/// `${{ x }}` and `x` mean the same in a `when:`.
fn strip_template(text: &str) -> &str {
    let t = text.trim();
    t.strip_prefix("${{")
        .and_then(|t| t.strip_suffix("}}"))
        .map_or(t, str::trim)
}

/// Whether `id` could be a word the expression language reserves (they are
/// short and hold no digit), so only those pay for compiling `tasks.<id>`;
/// a workflow of generated ids (`t1`, `t2`, ...) pays nothing.
fn might_be_reserved(id: &str) -> bool {
    id.len() <= 12 && !id.bytes().any(|b| b.is_ascii_digit())
}

fn is_identifier(id: &str) -> bool {
    let mut chars = id.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn known_tasks(index: &HashMap<&str, usize>) -> String {
    let mut ids: Vec<(&str, usize)> = index.iter().map(|(k, v)| (*k, *v)).collect();
    ids.sort_by_key(|(_, i)| *i);
    let ids: Vec<&str> = ids.into_iter().map(|(k, _)| k).take(20).collect();
    format!("known tasks: {}", ids.join(", "))
}
