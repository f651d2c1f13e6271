//! The execution ids of sub-workflow runs, as a type: a task that runs a
//! registered workflow records each run of it as an execution of its own,
//! named after the parent execution and the task, so the task run again
//! (after a crash, a retry, a replay) finds its runs by name.

use std::fmt;

use orchestrator_core::scheduler::{TaskRef, TaskRequest};

/// `<parent>-<task>`, then `-<item>` for a `for_each` item, `-fallback`
/// for the task's fallback, `-try<n>` from the second try on. Task ids
/// hold no `-`, so the parts stay apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildId {
    parent: String,
    /// The task of the parent's plan.
    task: String,
    /// The `for_each` item, if it is one.
    item: Option<usize>,
    fallback: bool,
    /// Which try, from 1.
    attempt: u32,
}

impl ChildId {
    /// The first try of the child `request` starts.
    pub fn of(request: &TaskRequest) -> Self {
        let task = TaskRef::parse(&request.task_id);
        Self {
            parent: request.execution_id.to_string(),
            task: task.task().to_owned(),
            item: task.item(),
            fallback: request.fallback,
            attempt: 1,
        }
    }

    /// Try `n` (from 1) of the same child.
    pub fn try_n(&self, n: u32) -> Self {
        Self {
            attempt: n,
            ..self.clone()
        }
    }
}

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.parent, self.task)?;
        if let Some(index) = self.item {
            write!(f, "-{index}")?;
        }
        if self.fallback {
            f.write_str("-fallback")?;
        }
        if self.attempt > 1 {
            write!(f, "-try{}", self.attempt)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_ids_name_parent_task_item_fallback_and_try() {
        let mut request = TaskRequest {
            execution_id: "e1".into(),
            tenant: Default::default(),
            task_id: "review[3]".into(),
            uses: "workflow:review".into(),
            attempt: 1,
            input: "{}".into(),
            limits: Default::default(),
            cancel: Default::default(),
            fallback: false,
            effects: Default::default(),
        };
        assert_eq!(ChildId::of(&request).to_string(), "e1-review-3");
        request.fallback = true;
        let child = ChildId::of(&request);
        assert_eq!(child.to_string(), "e1-review-3-fallback");
        assert_eq!(child.try_n(2).to_string(), "e1-review-3-fallback-try2");
        request.task_id = "review".into();
        request.fallback = false;
        assert_eq!(ChildId::of(&request).try_n(1).to_string(), "e1-review");
    }
}
