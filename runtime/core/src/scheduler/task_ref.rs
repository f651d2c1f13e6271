//! What a task state, an event or a request is about, as a type: a task of
//! the plan, or one item of a `for_each` task. Records, events and requests
//! carry it in its text form (`summarize`, `summarize[3]`: task ids hold no
//! brackets), written by [`TaskRef`]'s `Display` and read by
//! [`TaskRef::parse`] alone.

use std::fmt;

/// A task, or one item of a `for_each` task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskRef<'a> {
    /// The task itself.
    Task(&'a str),
    /// Item `index` (from 0) of `for_each` task `task`.
    Item {
        /// The `for_each` task.
        task: &'a str,
        /// The item's position in its list.
        index: usize,
    },
}

impl<'a> TaskRef<'a> {
    /// Reads an id: an item's when it is `task[index]`, a task's otherwise.
    pub fn parse(id: &'a str) -> Self {
        let item = id.split_once('[').and_then(|(task, rest)| {
            let index = rest.strip_suffix(']')?.parse().ok()?;
            Some(Self::Item { task, index })
        });
        item.unwrap_or(Self::Task(id))
    }

    /// The task of the plan: itself, or the `for_each` task of an item.
    pub fn task(self) -> &'a str {
        match self {
            Self::Task(task) | Self::Item { task, .. } => task,
        }
    }

    /// The item's index, if it is an item.
    pub fn item(self) -> Option<usize> {
        match self {
            Self::Task(_) => None,
            Self::Item { index, .. } => Some(index),
        }
    }

    /// Whether `id` names a `for_each` item rather than a task.
    pub fn is_item(id: &str) -> bool {
        TaskRef::parse(id).item().is_some()
    }
}

impl fmt::Display for TaskRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Task(task) => f.write_str(task),
            Self::Item { task, index } => write!(f, "{task}[{index}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let item = TaskRef::Item {
            task: "summarize",
            index: 42,
        };
        assert_eq!(item.to_string(), "summarize[42]");
        assert_eq!(TaskRef::parse("summarize[42]"), item);
        assert_eq!(item.task(), "summarize");
        assert_eq!(TaskRef::parse("summarize"), TaskRef::Task("summarize"));
        assert_eq!(TaskRef::parse("a[x]"), TaskRef::Task("a[x]"));
        assert!(TaskRef::is_item("a[0]"));
        assert!(!TaskRef::is_item("a"));
    }
}
