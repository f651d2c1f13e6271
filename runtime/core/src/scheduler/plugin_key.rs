//! Which prepared plugin an executor runs a request with, as a type: a
//! task's own, its fallback's, or a policy step's. Executors keep their
//! plugins under the text form ([`PluginKey`]'s `Display`), and execution
//! records name them that way; [`PluginKey::parse`] is the one reader of it.

use std::fmt;

/// Which stage of which `policies:` a policy step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyStage {
    /// Run on the prompt, before the model call.
    Before,
    /// Run on the answer, after it.
    After,
}

impl PolicyStage {
    /// `before` or `after`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Before => "before",
            Self::After => "after",
        }
    }
}

/// The key of one prepared plugin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PluginKey {
    /// Task `id`'s own plugin (also its `for_each` items'): `id`.
    Task(String),
    /// Task `id`'s fallback: `id#fallback`.
    Fallback(String),
    /// Step `index` of a `policies:` stage: `#policy-before-0`; a step the
    /// workflow inherited (the host's or a parent's) is
    /// `#policy-inherited-before-0`.
    Policy {
        /// Inherited from the host or a parent workflow.
        inherited: bool,
        /// Before or after the call.
        stage: PolicyStage,
        /// Its position in the stage, from 0.
        index: usize,
    },
}

impl PluginKey {
    /// Reads a key's text form; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(policy) = text.strip_prefix("#policy-") {
            let (inherited, rest) = match policy.strip_prefix("inherited-") {
                Some(rest) => (true, rest),
                None => (false, policy),
            };
            let (stage, index) = rest.split_once('-')?;
            let stage = match stage {
                "before" => PolicyStage::Before,
                "after" => PolicyStage::After,
                _ => return None,
            };
            let index = index.parse().ok()?;
            return Some(Self::Policy {
                inherited,
                stage,
                index,
            });
        }
        if text.is_empty() || text.starts_with('#') {
            return None;
        }
        match text.strip_suffix("#fallback") {
            Some(task) if !task.is_empty() => Some(Self::Fallback(task.to_owned())),
            Some(_) => None,
            None => Some(Self::Task(text.to_owned())),
        }
    }
}

impl fmt::Display for PluginKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Task(task) => f.write_str(task),
            Self::Fallback(task) => write!(f, "{task}#fallback"),
            Self::Policy {
                inherited,
                stage,
                index,
            } => {
                let inherited = if *inherited { "inherited-" } else { "" };
                write!(f, "#policy-{inherited}{}-{index}", stage.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_reads_back_as_itself() {
        let keys = [
            PluginKey::Task("summarize".into()),
            PluginKey::Fallback("summarize".into()),
            PluginKey::Policy {
                inherited: false,
                stage: PolicyStage::Before,
                index: 0,
            },
            PluginKey::Policy {
                inherited: true,
                stage: PolicyStage::After,
                index: 12,
            },
        ];
        let texts: Vec<String> = keys.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "summarize",
                "summarize#fallback",
                "#policy-before-0",
                "#policy-inherited-after-12"
            ]
        );
        for (key, text) in keys.iter().zip(&texts) {
            assert_eq!(PluginKey::parse(text).as_ref(), Some(key));
        }
        for bad in [
            "",
            "#fallback",
            "#policy-during-0",
            "#policy-before-x",
            "#other",
        ] {
            assert_eq!(PluginKey::parse(bad), None, "{bad}");
        }
    }
}
