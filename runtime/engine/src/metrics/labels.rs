//! Label values with a bound: tenants, plugins and models come from
//! operators, workflows and plugins, and each distinct value is a series
//! Prometheus keeps. Past a bound, new values share the series `other`.

use std::collections::HashSet;
use std::sync::Mutex;

/// The value that stands for every value past a label's bound.
pub const OTHER: &str = "other";

/// The longest label value kept; a longer one is cut (a model name a
/// plugin reported, say).
const MAX_VALUE_BYTES: usize = 64;

/// The distinct values one label may take.
#[derive(Debug)]
pub struct Bounded {
    seen: Mutex<HashSet<String>>,
    limit: usize,
}

impl Bounded {
    /// At most `limit` distinct values.
    pub fn new(limit: usize) -> Self {
        Self {
            seen: Mutex::default(),
            limit,
        }
    }

    /// `value` as the label takes it: itself (cut to 64 bytes) while the
    /// label has fewer than its limit of values, or one seen already;
    /// [`OTHER`] once the limit is reached.
    pub fn value(&self, value: &str) -> String {
        let mut end = value.len().min(MAX_VALUE_BYTES);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        let value = &value[..end];
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() >= self.limit {
            return OTHER.to_owned();
        }
        seen.insert(value.to_owned());
        value.to_owned()
    }
}

/// The plugin a task's `uses:` names, as a label: its name without the
/// version (`llm@1.2.0` is `llm`), `sha256:` and 12 hex digits for a
/// digest, `file` for a `.wasm` path (whose name is the workflow's).
pub fn plugin(uses: &str) -> &str {
    if uses.ends_with(".wasm") || uses.contains('/') {
        return "file";
    }
    if let Some(digest) = uses.strip_prefix("sha256:") {
        return &uses[..("sha256:".len() + digest.len().min(12))];
    }
    uses.split('@').next().unwrap_or(uses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_limit_share_other() {
        let label = Bounded::new(2);
        assert_eq!(label.value("a"), "a");
        assert_eq!(label.value("b"), "b");
        assert_eq!(label.value("c"), OTHER);
        assert_eq!(label.value("a"), "a");
    }

    #[test]
    fn long_values_are_cut_on_a_character() {
        let label = Bounded::new(4);
        let long = "é".repeat(100);
        let kept = label.value(&long);
        assert!(kept.len() <= 64 && long.starts_with(&kept), "{kept}");
    }

    #[test]
    fn plugins_are_named_without_versions_or_paths() {
        assert_eq!(plugin("llm@1.2.0"), "llm");
        assert_eq!(plugin("transform"), "transform");
        assert_eq!(plugin("./x/y.wasm"), "file");
        assert_eq!(plugin("sha256:0123456789abcdef0123"), "sha256:0123456789ab");
    }
}
