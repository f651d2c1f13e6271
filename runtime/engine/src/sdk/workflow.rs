//! Workflows built in code. A [`WorkflowBuilder`] writes the same document a
//! workflow file holds (as JSON, which the YAML reader reads too), so a
//! built workflow is parsed, validated and recorded exactly like a file:
//! the same model, the same checks, the same messages, and an execution
//! of it resumes from its recorded text like any other.

use serde_json::{Map, Value, json};

use crate::service::ServiceError;
use orchestrator_core::expr::Expressions;
use orchestrator_core::workflow::{self, PluginCatalog};

/// A validated workflow, ready for [`crate::Engine::start`].
///
/// ```
/// use orchestrator_engine::{Task, Workflow};
///
/// let workflow = Workflow::builder("shout")
///     .input("text", "string")
///     .task(
///         Task::new("upper", "transform")
///             .with("text", "${{ inputs.text }}")
///             .with("script", "text.to_upper()"),
///     )
///     .output("loud", "${{ tasks.upper.output }}")
///     .build()
///     .unwrap();
/// assert_eq!(workflow.name(), "shout");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    name: String,
    /// What the file would hold, as JSON text.
    source: String,
    /// The name messages give it, as they name a file.
    label: String,
}

impl Workflow {
    /// Starts a workflow named `name`.
    pub fn builder(name: &str) -> WorkflowBuilder {
        WorkflowBuilder {
            document: Map::from_iter([("name".to_owned(), Value::from(name))]),
            tasks: Vec::new(),
        }
    }

    /// A workflow from file text (YAML or JSON), checked as `runtime
    /// validate` checks it except for which plugins exist (checked when it
    /// starts). `label` names it in messages, as a file name would.
    ///
    /// ```
    /// let workflow = orchestrator_engine::Workflow::from_text(
    ///     "name: hi\ntasks:\n  - { id: a, uses: transform, with: { script: '1' } }\n",
    ///     "hi.yaml",
    /// )
    /// .unwrap();
    /// assert_eq!(workflow.name(), "hi");
    /// ```
    pub fn from_text(text: &str, label: &str) -> Result<Self, ServiceError> {
        let plan = workflow::load(text, label, &Expressions::new(), &AnyPlugin)?;
        Ok(Self {
            name: plan.name,
            source: text.to_owned(),
            label: label.to_owned(),
        })
    }

    /// Its name.
    ///
    /// ```
    /// let workflow = orchestrator_engine::Workflow::builder("hi")
    ///     .task(orchestrator_engine::Task::new("a", "transform").with("script", "1"))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(workflow.name(), "hi");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text it is recorded as.
    ///
    /// ```
    /// let workflow = orchestrator_engine::Workflow::builder("hi")
    ///     .task(orchestrator_engine::Task::new("a", "transform").with("script", "1"))
    ///     .build()
    ///     .unwrap();
    /// // A workflow built in code is recorded as the JSON a file would hold.
    /// let text: serde_json::Value = serde_json::from_str(workflow.source()).unwrap();
    /// assert_eq!(text["tasks"][0]["id"], "a");
    /// ```
    pub fn source(&self) -> &str {
        &self.source
    }

    /// What messages call it.
    ///
    /// ```
    /// let workflow = orchestrator_engine::Workflow::from_text(
    ///     "name: hi\ntasks:\n  - { id: a, uses: transform, with: { script: '1' } }\n",
    ///     "hi.yaml",
    /// )
    /// .unwrap();
    /// assert_eq!(workflow.label(), "hi.yaml");
    /// ```
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// Which plugins exist is known only to a store.
struct AnyPlugin;

impl PluginCatalog for AnyPlugin {
    fn check(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Builds a [`Workflow`]: the fields of a workflow file, set in code.
#[derive(Debug, Clone)]
pub struct WorkflowBuilder {
    document: Map<String, Value>,
    tasks: Vec<Value>,
}

impl WorkflowBuilder {
    /// Declares input `name` of JSON type `kind` (`string`, `number`,
    /// `integer`, `boolean`, `object`, `array` or `any`); it is required.
    ///
    /// ```
    /// use orchestrator_engine::{Task, Workflow};
    /// let workflow = Workflow::builder("greet")
    ///     .input("who", "string")
    ///     .task(Task::new("hi", "transform").with("who", "${{ inputs.who }}").with("script", r#""hi " + who"#))
    ///     .build()
    ///     .unwrap();
    /// assert!(workflow.source().contains(r#""who""#));
    /// ```
    pub fn input(self, name: &str, kind: &str) -> Self {
        self.input_spec(name, json!({ "type": kind }))
    }

    /// Declares input `name` with a default value (so it is optional).
    ///
    /// ```
    /// use orchestrator_engine::{Task, Workflow};
    /// let workflow = Workflow::builder("greet")
    ///     .input_with_default("who", "string", serde_json::json!("world"))
    ///     .task(Task::new("hi", "transform").with("who", "${{ inputs.who }}").with("script", r#""hi " + who"#))
    ///     .build()
    ///     .unwrap();
    /// assert!(workflow.source().contains(r#""default": "world""#));
    /// ```
    pub fn input_with_default(self, name: &str, kind: &str, default: Value) -> Self {
        self.input_spec(name, json!({ "type": kind, "default": default }))
    }

    fn input_spec(mut self, name: &str, spec: Value) -> Self {
        let inputs = self
            .document
            .entry("inputs")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(inputs) = inputs {
            inputs.insert(name.to_owned(), spec);
        }
        self
    }

    /// Adds a task.
    ///
    /// ```
    /// use orchestrator_engine::{Task, Workflow};
    /// let workflow = Workflow::builder("two")
    ///     .task(Task::new("a", "transform").with("script", "1"))
    ///     .task(Task::new("b", "transform").needs(["a"]).with("script", "2"))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(workflow.name(), "two");
    /// ```
    pub fn task(mut self, task: Task) -> Self {
        self.tasks.push(Value::Object(task.0));
        self
    }

    /// Adds output `name`: an expression or a `${{ }}` template.
    ///
    /// ```
    /// use orchestrator_engine::{Task, Workflow};
    /// let workflow = Workflow::builder("out")
    ///     .task(Task::new("a", "transform").with("script", "41 + 1"))
    ///     .output("answer", "${{ tasks.a.output }}")
    ///     .build()
    ///     .unwrap();
    /// assert!(workflow.source().contains(r#""answer""#));
    /// ```
    pub fn output(mut self, name: &str, value: impl Into<Value>) -> Self {
        let outputs = self
            .document
            .entry("outputs")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(outputs) = outputs {
            outputs.insert(name.to_owned(), value.into());
        }
        self
    }

    /// Sets any other workflow field as the file would (`durability`,
    /// `retry`, `timeout`, `limits`, `budget`, `policies`, ...).
    ///
    /// ```
    /// use orchestrator_engine::{Task, Workflow};
    /// let workflow = Workflow::builder("fast")
    ///     .set("durability", "batched")
    ///     .task(Task::new("a", "transform").with("script", "1"))
    ///     .build()
    ///     .unwrap();
    /// assert!(workflow.source().contains(r#""durability": "batched""#));
    /// ```
    pub fn set(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.document.insert(field.to_owned(), value.into());
        self
    }

    /// The workflow, validated as a file is: a problem is an error naming
    /// the task and field (and the line of the generated text).
    ///
    /// ```
    /// use orchestrator_engine::{Task, Workflow};
    /// let error = Workflow::builder("bad")
    ///     .task(Task::new("a", "transform").needs(["missing"]))
    ///     .build()
    ///     .unwrap_err();
    /// assert!(error.to_string().contains("missing"), "{error}");
    /// ```
    pub fn build(self) -> Result<Workflow, ServiceError> {
        let mut document = self.document;
        document.insert("tasks".to_owned(), Value::Array(self.tasks));
        let name = document["name"].as_str().unwrap_or_default().to_owned();
        let source =
            serde_json::to_string_pretty(&Value::Object(document)).expect("JSON serializes");
        Workflow::from_text(&source, &format!("<workflow `{name}` built in code>"))
    }
}

/// One task of a [`WorkflowBuilder`].
///
/// ```
/// use orchestrator_engine::Task;
/// use serde_json::json;
///
/// let task = Task::new("summarize", "llm")
///     .with("prompt", "Summarize: ${{ inputs.text }}")
///     .needs(["fetch"])
///     .set("retry", json!({ "max_attempts": 3 }));
/// # let _ = task;
/// ```
#[derive(Debug, Clone)]
pub struct Task(Map<String, Value>);

impl Task {
    /// Task `id` run by plugin `uses` (`name`, `name@version`,
    /// `sha256:<digest>`, a `.wasm` path or `workflow:NAME`).
    ///
    /// ```
    /// let task = orchestrator_engine::Task::new("shout", "transform").with("script", r#""HI""#);
    /// # let _ = task;
    /// ```
    pub fn new(id: &str, uses: &str) -> Self {
        Self(Map::from_iter([
            ("id".to_owned(), Value::from(id)),
            ("uses".to_owned(), Value::from(uses)),
        ]))
    }

    /// Task `id` that waits for signal `signal` (its output is the payload).
    ///
    /// ```
    /// use orchestrator_engine::{Task, Workflow};
    /// let workflow = Workflow::builder("approval")
    ///     .task(Task::wait("approve", "go").set("timeout", "1h"))
    ///     .build()
    ///     .unwrap();
    /// assert!(workflow.source().contains(r#""signal": "go""#));
    /// ```
    pub fn wait(id: &str, signal: &str) -> Self {
        Self(Map::from_iter([
            ("id".to_owned(), Value::from(id)),
            ("wait".to_owned(), json!({ "signal": signal })),
        ]))
    }

    /// Sets input `key` of its `with:` (strings may hold `${{ }}`).
    ///
    /// ```
    /// let task = orchestrator_engine::Task::new("ask", "llm")
    ///     .with("model", "gpt-4o-mini")
    ///     .with("prompt", "Summarize: ${{ inputs.text }}");
    /// # let _ = task;
    /// ```
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        let with = self
            .0
            .entry("with")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(with) = with {
            with.insert(key.to_owned(), value.into());
        }
        self
    }

    /// The tasks that must finish first.
    ///
    /// ```
    /// let task = orchestrator_engine::Task::new("join", "transform").needs(["left", "right"]);
    /// # let _ = task;
    /// ```
    pub fn needs<'a>(mut self, tasks: impl IntoIterator<Item = &'a str>) -> Self {
        let needs = tasks.into_iter().map(Value::from).collect();
        self.0.insert("needs".to_owned(), Value::Array(needs));
        self
    }

    /// A Rhai condition; the task is skipped when it is false.
    ///
    /// ```
    /// let task = orchestrator_engine::Task::new("notify", "transform")
    ///     .when("tasks.check.output.score < 0.5")
    ///     .with("script", r#""low score""#);
    /// # let _ = task;
    /// ```
    pub fn when(self, condition: &str) -> Self {
        self.set("when", condition)
    }

    /// Sets any other task field as the file would (`retry`, `timeout`,
    /// `fallback`, `for_each`, `limits`, `cache`, ...).
    ///
    /// ```
    /// let task = orchestrator_engine::Task::new("ask", "llm")
    ///     .set("timeout", "30s")
    ///     .set("retry", serde_json::json!({ "max_attempts": 3 }));
    /// # let _ = task;
    /// ```
    pub fn set(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.0.insert(field.to_owned(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_workflow_is_checked_like_a_file() {
        let error = Workflow::builder("bad")
            .task(Task::new("a", "transform").needs(["missing"]))
            .build()
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing"), "{error}");
        assert!(error.contains("built in code"), "{error}");

        let error = Workflow::builder("typo")
            .task(Task::new("a", "transform").set("need", json!(["b"])))
            .build()
            .unwrap_err()
            .to_string();
        assert!(error.contains("need"), "{error}");
    }

    #[test]
    fn a_built_workflow_is_the_file_it_stands_for() {
        let built = Workflow::builder("same")
            .input("n", "integer")
            .task(Task::new("double", "transform").with("script", "2 * 2"))
            .output("twice", "${{ tasks.double.output }}")
            .build()
            .unwrap();
        let text: Value = serde_json::from_str(built.source()).unwrap();
        assert_eq!(
            text,
            json!({
                "name": "same",
                "inputs": { "n": { "type": "integer" } },
                "outputs": { "twice": "${{ tasks.double.output }}" },
                "tasks": [{ "id": "double", "uses": "transform", "with": { "script": "2 * 2" } }],
            })
        );
    }
}
