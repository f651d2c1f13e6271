//! Sandbox limits: defaults, and the text forms a workflow writes them in.

use std::time::Duration;

/// What one task attempt may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel budget; one unit is roughly one WebAssembly instruction.
    pub fuel: u64,
    /// Cap on linear memory, in bytes.
    pub memory: u64,
    /// Wall-clock deadline of one attempt, instantiation included.
    pub deadline: Duration,
    /// Largest output (JSON text) an attempt may return, in bytes.
    pub output: u64,
}

/// The largest memory cap a task may ask for: the size of a sandbox memory slot.
pub const MAX_MEMORY: u64 = 4 << 30;

impl Default for Limits {
    /// Generous for a model call or a transform (a `transform` task uses
    /// about 5 million fuel), small enough to stop a runaway plugin quickly.
    fn default() -> Self {
        Self {
            fuel: 1_000_000_000,
            memory: 128 << 20,
            deadline: Duration::from_secs(60),
            output: 16 << 20,
        }
    }
}

/// Parses a byte size: `1048576`, `512KiB`, `64MiB`, `1GiB`, `10MB`, `64 MiB`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write it like `64MiB`"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{text}`; use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// The longest duration a workflow or the config may write (timeouts,
/// intervals, windows, ttls): 365 days. Longer ones are mistakes, and adding
/// them to a clock would overflow it.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The longest `limits.deadline` of one attempt: 24 hours.
pub const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// The largest `limits.output` of one attempt: 1 GiB.
pub const MAX_OUTPUT: u64 = 1 << 30;

/// Parses a duration such as `500ms`, `30s` or `2m 30s`, at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}); write it like `30s` or `500ms`"))?;
    if duration > MAX_DURATION {
        return Err(format!(
            "`{text}` is longer than the longest duration allowed, 365 days"
        ));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("lots").is_err());
        assert!(
            parse_bytes("3 parsecs")
                .unwrap_err()
                .contains("unknown size unit")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("365days"), Ok(MAX_DURATION));
        let err = parse_duration("10000000000000000000s").unwrap_err();
        assert!(err.contains("365 days"), "{err}");
        let err = parse_duration("366days").unwrap_err();
        assert!(err.contains("365 days"), "{err}");
    }
}
