//! Errors in a workflow file, each pointing at a line and saying what to do.

use std::fmt;

/// One problem in a workflow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line and column, when the problem has a place in the file.
    pub location: Option<(u64, u64)>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A problem at `location`.
    pub fn at(location: Option<(u64, u64)>, message: impl Into<String>) -> Self {
        Self {
            location,
            message: message.into(),
            help: None,
        }
    }

    /// Adds advice.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Every problem found in one workflow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowError {
    /// The file as the user named it.
    pub file: String,
    /// The problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match d.location {
                Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.file, d.message)?,
                None => write!(f, "{}: {}", self.file, d.message)?,
            }
            if let Some(help) = &d.help {
                write!(f, "\n  help: {help}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for WorkflowError {}
