//! Rhai on the host: `when:` conditions, `${{ }}` templates and workflow outputs.
//!
//! Everything is compiled once, when a workflow is validated, and evaluated
//! many times. The engine is sandboxed: bounded operations, string, array and
//! map sizes and nesting; no modules, no `eval`, no printing, no I/O. Scripts
//! see two variables: `inputs` (the workflow's inputs) and `tasks`
//! (`tasks.<id>.output` and `tasks.<id>.status` of the tasks they read).
//!
//! This module knows nothing of files, wasmtime or the scheduler.

use std::fmt;
use std::sync::Arc;

use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicFnPackage, BasicIteratorPackage, BasicMapPackage,
    BasicMathPackage, BasicStringPackage, BitFieldPackage, LogicPackage, MoreStringPackage,
    Package,
};
use rhai::{AST, Dynamic, Engine, Map, Scope};
use serde_json::Value;

/// Where a template's expressions start and end.
const OPEN: &str = "${{";
const CLOSE: &str = "}}";

/// A Rhai engine with host-side limits.
#[derive(Clone)]
pub struct Expressions {
    engine: Arc<Engine>,
}

impl Default for Expressions {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Expressions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Expressions")
    }
}

/// Why an expression did not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Rhai's description of the problem.
    pub message: String,
    /// 1-based line inside the expression, when Rhai knows it.
    pub line: Option<usize>,
    /// 1-based column inside the expression, when Rhai knows it.
    pub column: Option<usize>,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, " (expression line {line}, column {column})"),
            (Some(line), None) => write!(f, " (expression line {line})"),
            _ => Ok(()),
        }
    }
}

/// A compiled expression and the task ids it reads through `tasks.<id>`.
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
    ast: AST,
    reads: Vec<String>,
    input_reads: Vec<String>,
}

impl Expression {
    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Task ids this expression names as `tasks.<id>` or `tasks["<id>"]`.
    pub fn reads(&self) -> &[String] {
        &self.reads
    }

    /// Input names this expression reads as `inputs.<name>` or `inputs["<name>"]`.
    pub fn input_reads(&self) -> &[String] {
        &self.input_reads
    }
}

/// What expressions may read while they are evaluated.
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    inputs: Dynamic,
    tasks: Map,
    /// Other names, such as `error` and `attempt` in a `retry_if`.
    values: Vec<(&'static str, Dynamic)>,
}

impl Bindings {
    /// Bindings that expose `inputs`.
    pub fn new(inputs: &Value) -> Self {
        Self {
            inputs: to_dynamic(inputs),
            tasks: Map::new(),
            values: Vec::new(),
        }
    }

    /// Exposes `value` as `name`.
    pub fn add_value(&mut self, name: &'static str, value: &Value) {
        self.values.push((name, to_dynamic(value)));
    }

    /// Exposes `tasks.<id>.output` and `tasks.<id>.status`. The output must
    /// come from [`Expressions::convert`], so it is converted from JSON once.
    pub fn add_task(&mut self, id: &str, status: &str, output: ConvertedValue) {
        let mut task = Map::new();
        task.insert("output".into(), output.0);
        task.insert("status".into(), status.into());
        self.tasks.insert(id.into(), task.into());
    }
}

/// A JSON value converted once for Rhai, then copied to each reader.
///
/// Not a Rhai shared value: those are locked while a method runs on them, so
/// `inputs.list.map(|x| inputs.list.len())` would fail with a "data race".
#[derive(Debug, Clone)]
pub struct ConvertedValue(Dynamic);

/// A JSON value whose strings may hold `${{ expression }}` templates.
#[derive(Debug, Clone)]
pub enum Template {
    /// No template anywhere inside: used as is.
    Literal(Value),
    /// A string that is exactly one `${{ }}`: takes the expression's value and type.
    Whole(Expression),
    /// Text with `${{ }}` parts: always a string.
    Interpolated(Vec<Part>),
    /// An array with templates inside.
    Array(Vec<Template>),
    /// An object with templates inside.
    Object(Vec<(String, Template)>),
}

/// A piece of an interpolated string.
#[derive(Debug, Clone)]
pub enum Part {
    /// Text copied as is.
    Text(String),
    /// An expression whose value is inserted (strings without quotes).
    Expr(Expression),
}

impl Expressions {
    /// The sandboxed engine.
    pub fn new() -> Self {
        // `new_raw` has no functions at all; only the packages an expression
        // needs are added. Left out on purpose: the language core (`sleep`,
        // `exit`, `parse_json`), time (`timestamp`, a clock a resumed run would
        // read differently) and blobs (no JSON form).
        let mut engine = Engine::new_raw();
        for package in [
            ArithmeticPackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BitFieldPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BasicStringPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            BasicIteratorPackage::new().as_shared_module(),
            BasicFnPackage::new().as_shared_module(),
        ] {
            engine.register_global_module(package);
        }
        // Rhai's own counter restarts inside closures called by native
        // functions (`list.map(|x| ...)`), so the budget is kept here instead.
        engine.on_progress(|_| spend_operation());
        engine.set_max_string_size(1 << 20);
        engine.set_max_array_size(100_000);
        engine.set_max_map_size(100_000);
        engine.set_max_call_levels(32);
        engine.set_max_expr_depths(64, 32);
        engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
        engine.disable_symbol("eval");
        engine.on_print(|_| {});
        engine.on_debug(|_, _, _| {});
        Self {
            engine: Arc::new(engine),
        }
    }

    /// Compiles one expression (no statements or loops).
    pub fn compile(&self, source: &str) -> Result<Expression, CompileError> {
        let ast = self
            .engine
            .compile_expression(source)
            .map_err(|e| CompileError {
                message: e.0.to_string(),
                line: e.1.line(),
                column: e.1.position(),
            })?;
        Ok(Expression {
            source: source.to_owned(),
            ast,
            reads: names_after(source, "tasks"),
            input_reads: names_after(source, "inputs"),
        })
    }

    /// Compiles every `${{ }}` inside a JSON value.
    pub fn compile_template(&self, value: &Value) -> Result<Template, CompileError> {
        Ok(match value {
            Value::String(text) => self.compile_string(text)?,
            Value::Array(items) => {
                let items = items
                    .iter()
                    .map(|item| self.compile_template(item))
                    .collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|t| matches!(t, Template::Literal(_))) {
                    Template::Literal(value.clone())
                } else {
                    Template::Array(items)
                }
            }
            Value::Object(fields) => {
                let fields = fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.compile_template(v)?)))
                    .collect::<Result<Vec<_>, CompileError>>()?;
                if fields
                    .iter()
                    .all(|(_, t)| matches!(t, Template::Literal(_)))
                {
                    Template::Literal(value.clone())
                } else {
                    Template::Object(fields)
                }
            }
            other => Template::Literal(other.clone()),
        })
    }

    fn compile_string(&self, text: &str) -> Result<Template, CompileError> {
        if !text.contains(OPEN) {
            return Ok(Template::Literal(Value::String(text.to_owned())));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(OPEN) {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + OPEN.len()..];
            let end = after.find(CLOSE).ok_or_else(|| CompileError {
                message: format!("`{OPEN}` is not closed by `{CLOSE}`"),
                line: None,
                column: None,
            })?;
            parts.push(Part::Expr(self.compile(after[..end].trim())?));
            rest = &after[end + CLOSE.len()..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(match parts.as_slice() {
            [Part::Expr(expr)] => Template::Whole(expr.clone()),
            _ => Template::Interpolated(parts),
        })
    }

    /// Converts a JSON value once for every expression that reads it.
    pub fn convert(&self, value: &Value) -> ConvertedValue {
        ConvertedValue(to_dynamic(value))
    }

    /// Evaluates an expression to JSON.
    pub fn eval(&self, expr: &Expression, bindings: &Bindings) -> Result<Value, String> {
        OPERATIONS_LEFT.with(|left| left.set(MAX_OPERATIONS));
        let mut scope = Scope::new();
        scope.push_constant_dynamic("inputs", bindings.inputs.clone());
        scope.push_constant_dynamic("tasks", bindings.tasks.clone().into());
        for (name, value) in &bindings.values {
            scope.push_constant_dynamic(*name, value.clone());
        }
        // Rhai's functions are not all free of panics on hostile arguments;
        // a panic inside one is this expression's error, never the host's.
        let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.engine
                .eval_ast_with_scope::<Dynamic>(&mut scope, &expr.ast)
        }))
        .map_err(|panic| format!("`{}` failed: {}", expr.source, panic_message(&*panic)))?;
        let result: Dynamic = evaluated.map_err(|e| match e.unwrap_inner() {
            rhai::EvalAltResult::ErrorTerminated(..) => format!(
                "`{}` was stopped: an expression may perform at most {MAX_OPERATIONS} operations",
                expr.source
            ),
            _ => format!("`{}` failed: {e}", expr.source),
        })?;
        rhai::serde::from_dynamic(&result.flatten())
            .map_err(|e| format!("`{}` gave a value that is not JSON: {e}", expr.source))
    }

    /// Evaluates a condition, which must give `true` or `false`.
    pub fn eval_condition(&self, expr: &Expression, bindings: &Bindings) -> Result<bool, String> {
        match self.eval(expr, bindings)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "condition `{}` must give true or false, not {other}",
                expr.source
            )),
        }
    }

    /// Renders a template to JSON, at most [`MAX_RENDERED_BYTES`] of it.
    pub fn render(&self, template: &Template, bindings: &Bindings) -> Result<Value, String> {
        let mut budget = MAX_RENDERED_BYTES;
        self.render_within(template, bindings, &mut budget)
    }

    fn render_within(
        &self,
        template: &Template,
        bindings: &Bindings,
        budget: &mut usize,
    ) -> Result<Value, String> {
        let value = match template {
            Template::Literal(value) => value.clone(),
            Template::Whole(expr) => self.eval(expr, bindings)?,
            Template::Interpolated(parts) => {
                let mut text = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => text.push_str(t),
                        Part::Expr(expr) => match self.eval(expr, bindings)? {
                            Value::String(s) => text.push_str(&s),
                            other => text.push_str(&other.to_string()),
                        },
                    }
                    if text.len() > *budget {
                        return Err(too_large());
                    }
                }
                Value::String(text)
            }
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| self.render_within(t, bindings, budget))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), self.render_within(t, bindings, budget)?)))
                    .collect::<Result<_, String>>()?,
            ),
        };
        if matches!(template, Template::Whole(_) | Template::Interpolated(_)) {
            *budget = budget
                .checked_sub(json_size(&value))
                .ok_or_else(too_large)?;
        }
        Ok(value)
    }
}

/// The most JSON text one rendering (a task's resolved `with:`, a
/// workflow's outputs) may produce from its expressions.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;

fn too_large() -> String {
    format!(
        "the expressions render more than {} MiB of JSON; pass large data between tasks as task outputs and keep what expressions build small",
        MAX_RENDERED_BYTES >> 20
    )
}

/// About how many bytes `value` takes as JSON text, without writing it.
fn json_size(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => items.iter().map(json_size).fold(2, usize::saturating_add),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| k.len().saturating_add(3).saturating_add(json_size(v)))
            .fold(2, usize::saturating_add),
    }
}

/// The text a panic carried, for an error message.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

impl Template {
    /// Every expression inside, in order.
    pub fn expressions(&self) -> Vec<&Expression> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Expression>) {
        match self {
            Template::Literal(_) => {}
            Template::Whole(expr) => out.push(expr),
            Template::Interpolated(parts) => out.extend(parts.iter().filter_map(|p| match p {
                Part::Expr(e) => Some(e),
                Part::Text(_) => None,
            })),
            Template::Array(items) => items.iter().for_each(|t| t.collect(out)),
            Template::Object(fields) => fields.iter().for_each(|(_, t)| t.collect(out)),
        }
    }
}

/// Operations one evaluation may perform.
const MAX_OPERATIONS: u64 = 100_000;

thread_local! {
    static OPERATIONS_LEFT: std::cell::Cell<u64> = const { std::cell::Cell::new(MAX_OPERATIONS) };
}

/// Counts one operation against the evaluation's budget; ends it when spent.
fn spend_operation() -> Option<Dynamic> {
    OPERATIONS_LEFT.with(|left| match left.get() {
        0 => Some(Dynamic::UNIT),
        n => {
            left.set(n - 1);
            None
        }
    })
}

fn to_dynamic(value: &Value) -> Dynamic {
    // Every JSON value has a Rhai form, so this cannot fail.
    rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT)
}

/// Finds `<variable>.<name>` and `<variable>["<name>"]` in an expression's
/// text, so the validator can check that a task reads only declared inputs
/// and tasks it waits for.
fn names_after(source: &str, variable: &str) -> Vec<String> {
    let mut reads: Vec<String> = Vec::new();
    let bytes = source.as_bytes();
    let mut from = 0;
    while let Some(found) = source[from..].find(variable) {
        let start = from + found;
        let end = start + variable.len();
        from = end;
        let preceded_by_ident = start > 0 && is_ident_byte(bytes[start - 1]);
        if preceded_by_ident {
            continue;
        }
        let rest = &source[end..];
        let id = if let Some(rest) = rest.strip_prefix('.') {
            let len = rest.bytes().take_while(|b| is_ident_byte(*b)).count();
            &rest[..len]
        } else if let Some(rest) = rest.strip_prefix("[\"") {
            rest.split('"').next().unwrap_or("")
        } else {
            ""
        };
        if !id.is_empty() && !reads.iter().any(|r| r == id) {
            reads.push(id.to_owned());
        }
    }
    reads
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bindings() -> Bindings {
        let expressions = Expressions::new();
        let mut b = Bindings::new(&json!({"who": "world", "n": 2}));
        b.add_task(
            "greet",
            "succeeded",
            expressions.convert(&json!({"text": "hi"})),
        );
        b
    }

    #[test]
    fn whole_template_keeps_the_type() {
        let e = Expressions::new();
        let t = e.compile_template(&json!("${{ inputs.n * 2 }}")).unwrap();
        assert_eq!(e.render(&t, &bindings()).unwrap(), json!(4));
    }

    #[test]
    fn interpolation_builds_a_string() {
        let e = Expressions::new();
        let t = e
            .compile_template(
                &json!({"a": ["say ${{ tasks.greet.output.text }} to ${{ inputs.who }}"]}),
            )
            .unwrap();
        assert_eq!(
            e.render(&t, &bindings()).unwrap(),
            json!({"a": ["say hi to world"]})
        );
    }

    #[test]
    fn conditions_must_be_boolean() {
        let e = Expressions::new();
        let yes = e.compile("inputs.n > 1").unwrap();
        assert!(e.eval_condition(&yes, &bindings()).unwrap());
        let not_bool = e.compile("inputs.n").unwrap();
        let err = e.eval_condition(&not_bool, &bindings()).unwrap_err();
        assert!(err.contains("must give true or false"), "{err}");
    }

    #[test]
    fn reads_are_found() {
        let e = Expressions::new();
        let expr = e
            .compile(r#"tasks.a.output + tasks["b"].status + mytasks.c"#)
            .unwrap();
        assert_eq!(expr.reads(), ["a", "b"]);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = Expressions::new().compile("1 +* 2").unwrap_err();
        assert_eq!(err.line, Some(1));
        assert!(err.column.is_some());
    }

    #[test]
    fn runaway_scripts_are_stopped() {
        let e = Expressions::new();
        let big: Vec<u32> = (0..1000).collect();
        let mut bindings = Bindings::new(&json!({ "big": big }));
        bindings.add_task("t", "succeeded", e.convert(&json!(big)));
        let expr = e
            .compile("inputs.big.map(|x| tasks.t.output.map(|y| x + y).len())")
            .unwrap();
        let err = e.eval(&expr, &bindings).unwrap_err();
        assert!(err.contains("operations"), "{err}");
    }

    #[test]
    fn nothing_that_blocks_or_reads_the_clock() {
        let e = Expressions::new();
        for source in ["sleep(1e300)", "sleep(3)", "timestamp()", "exit()"] {
            let expr = e.compile(source).unwrap();
            let started = std::time::Instant::now();
            let err = e.eval(&expr, &bindings()).unwrap_err();
            assert!(err.contains("not found"), "{source}: {err}");
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
        // What expressions do need is still there.
        let expr = e
            .compile(r#"[1, 2, 3].map(|x| x * 2).len() + "abc".to_upper().len() + #{a: 1}.keys().len() + floor(2.5).to_int()"#)
            .unwrap();
        assert_eq!(e.eval(&expr, &bindings()).unwrap(), json!(9));
    }

    #[test]
    fn values_an_expression_builds_are_bounded() {
        let e = Expressions::new();
        let list: Vec<u32> = (0..60_000).collect();
        let bindings = Bindings::new(&json!({ "s": "x".repeat(900_000), "list": list }));
        for source in ["inputs.s + inputs.s", "inputs.list + inputs.list"] {
            let expr = e.compile(source).unwrap();
            let err = e.eval(&expr, &bindings).unwrap_err();
            assert!(err.contains("too large"), "{source}: {err}");
        }
    }

    #[test]
    fn big_renderings_are_refused() {
        let e = Expressions::new();
        // Each expression stays under Rhai's string limit; together they pass the cap.
        let bindings = Bindings::new(&json!({ "s": "x".repeat(900_000) }));
        let parts: Vec<String> = (0..20).map(|_| "${{ inputs.s }}".to_owned()).collect();
        let t = e
            .compile_template(&json!({ "text": parts.concat() }))
            .unwrap();
        let err = e.render(&t, &bindings).unwrap_err();
        assert!(err.contains("16 MiB"), "{err}");
        let t = e.compile_template(&json!(parts)).unwrap();
        let err = e.render(&t, &bindings).unwrap_err();
        assert!(err.contains("16 MiB"), "{err}");
        let t = e.compile_template(&json!(&parts[..10])).unwrap();
        assert!(e.render(&t, &bindings).is_ok());
    }

    #[test]
    fn no_eval_and_no_modules() {
        let e = Expressions::new();
        assert!(e.compile(r#"eval("1")"#).is_err());
    }
}
