//! Recorded HTTP exchanges, so a pipeline that calls models can run again
//! with no network and the same answers (`runtime run --record FILE`, then
//! `--replay FILE`).
//!
//! Recording keeps each request a plugin sent (method, URL, body: never the
//! headers, so secrets the host attached stay out of the file) with the
//! response it got. Replaying answers a request from the first recorded
//! exchange with the same method, URL and body (JSON bodies compared as
//! JSON, so key order does not matter) that has not answered yet, the last
//! one again when all have; a request with none is refused with a message
//! naming it. The file is pretty JSON, so a cassette can be read and
//! reviewed like code.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

const FORMAT: u32 = 1;

/// The most bytes of exchanges a recording holds in memory (and writes).
pub const MAX_RECORDED_BYTES: usize = 256 << 20;

/// One request and its response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The absolute URL.
    pub url: String,
    /// The request body as text.
    pub body: String,
    /// The response's status.
    pub status: u16,
    /// The response's headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The response body as text.
    pub response: String,
}

#[derive(Serialize, Deserialize)]
struct File {
    format: u32,
    exchanges: Vec<Exchange>,
}

/// Exchanges being recorded, or replayed.
#[derive(Debug)]
pub struct Cassette {
    path: PathBuf,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// The exchanges, and their size in bytes.
    Recording(Mutex<(Vec<Exchange>, usize)>),
    Replaying {
        exchanges: Vec<Exchange>,
        /// How many times each exchange answered.
        used: Mutex<Vec<usize>>,
    },
}

impl Cassette {
    /// A new recording, written to `path` by [`Cassette::save`].
    pub fn record(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            mode: Mode::Recording(Mutex::default()),
        }
    }

    /// Replays the exchanges recorded in `path`.
    pub fn replay(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the cassette {}: {e}", path.display()))?;
        let file: File = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}:{}:{}: not a cassette: {e}",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
        if file.format != FORMAT {
            return Err(format!(
                "{}: cassette format {} is not the format {FORMAT} this runtime reads; record it again with `--record`",
                path.display(),
                file.format
            ));
        }
        let used = Mutex::new(vec![0; file.exchanges.len()]);
        Ok(Self {
            path: path.to_owned(),
            mode: Mode::Replaying {
                exchanges: file.exchanges,
                used,
            },
        })
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether requests are answered from the file.
    pub fn replaying(&self) -> bool {
        matches!(self.mode, Mode::Replaying { .. })
    }

    /// Writes what was recorded; returns how many exchanges.
    pub fn save(&self) -> Result<usize, String> {
        let Mode::Recording(exchanges) = &self.mode else {
            return Ok(0);
        };
        let exchanges = exchanges.lock().expect("cassette lock").0.clone();
        let count = exchanges.len();
        let file = File {
            format: FORMAT,
            exchanges,
        };
        let text = serde_json::to_string_pretty(&file).expect("exchanges serialize");
        orchestrator_private::write_file(&self.path, (text + "\n").as_bytes())
            .map_err(|e| format!("cannot write the cassette {}: {e}", self.path.display()))?;
        Ok(count)
    }

    /// Keeps one exchange (when recording), or says that the recording
    /// is full.
    pub(super) fn keep(&self, exchange: Exchange) -> Result<(), String> {
        if let Mode::Recording(recording) = &self.mode {
            let mut recording = recording.lock().expect("cassette lock");
            let size = exchange.url.len() + exchange.body.len() + exchange.response.len();
            if recording.1.saturating_add(size) > MAX_RECORDED_BYTES {
                return Err(format!(
                    "the recording {} would hold more than {} MiB of exchanges, the most one recording may hold (cap `cassette`); {} {} was not kept",
                    self.path.display(),
                    MAX_RECORDED_BYTES >> 20,
                    exchange.method,
                    exchange.url
                ));
            }
            recording.1 += size;
            recording.0.push(exchange);
        }
        Ok(())
    }

    /// The recorded answer to a request, or why there is none.
    pub(super) fn answer(&self, method: &str, url: &str, body: &str) -> Result<Exchange, String> {
        let Mode::Replaying { exchanges, used } = &self.mode else {
            return Err("the cassette is recording, not replaying".to_owned());
        };
        let mut used = used.lock().expect("cassette lock");
        let matching: Vec<usize> = exchanges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.method == method && e.url == url && same_body(&e.body, body))
            .map(|(i, _)| i)
            .collect();
        let Some(&last) = matching.last() else {
            return Err(format!(
                "the cassette {} has no exchange for {method} {url} with this body: {}; record it with `runtime run --record FILE`",
                self.path.display(),
                clip(body)
            ));
        };
        let index = matching
            .iter()
            .copied()
            .find(|&i| used[i] == 0)
            .unwrap_or(last);
        used[index] += 1;
        Ok(exchanges[index].clone())
    }
}

/// Equal as JSON when both are JSON, as text otherwise.
fn same_body(recorded: &str, sent: &str) -> bool {
    match (
        serde_json::from_str::<Value>(recorded),
        serde_json::from_str::<Value>(sent),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => recorded == sent,
    }
}

fn clip(text: &str) -> String {
    let mut clipped: String = text.chars().take(300).collect();
    if clipped.len() < text.len() {
        clipped.push_str("...");
    }
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(body: &str, response: &str) -> Exchange {
        Exchange {
            method: "POST".into(),
            url: "https://api.example.com/v1/x".into(),
            body: body.into(),
            status: 200,
            headers: Vec::new(),
            response: response.into(),
        }
    }

    #[test]
    fn a_recording_holds_a_bounded_amount() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let recording = Cassette::record(&dir.path().join("c.json"));
        let big = "x".repeat(MAX_RECORDED_BYTES / 3);
        for _ in 0..2 {
            assert_eq!(recording.keep(exchange("{}", &big)), Ok(()));
        }
        let full = recording.keep(exchange("{}", &big)).unwrap_err();
        assert!(full.contains("cap `cassette`"), "{full}");
        assert_eq!(recording.save(), Ok(2));
    }

    #[test]
    fn recorded_exchanges_replay_in_order_and_misses_name_the_request() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("c.json");
        let recording = Cassette::record(&path);
        assert_eq!(
            recording.keep(exchange(r#"{"a":1,"b":2}"#, "first")),
            Ok(())
        );
        assert_eq!(
            recording.keep(exchange(r#"{"a":1,"b":2}"#, "second")),
            Ok(())
        );
        assert_eq!(recording.save(), Ok(2));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path)
            .expect("saved")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a cassette is its user's alone");

        let replay = Cassette::replay(&path).expect("it reads back");
        let url = "https://api.example.com/v1/x";
        let answer = |body: &str| replay.answer("POST", url, body).map(|e| e.response);
        // JSON bodies match whatever the key order.
        assert_eq!(answer(r#"{"b":2,"a":1}"#), Ok("first".into()));
        assert_eq!(answer(r#"{"a":1,"b":2}"#), Ok("second".into()));
        assert_eq!(answer(r#"{"a":1,"b":2}"#), Ok("second".into()));
        let miss = answer(r#"{"a":3}"#).unwrap_err();
        assert!(
            miss.contains(
                r#"no exchange for POST https://api.example.com/v1/x with this body: {"a":3}"#
            ),
            "{miss}"
        );
    }

    #[test]
    fn a_damaged_cassette_is_refused_with_its_place() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("c.json");
        std::fs::write(&path, "{\"format\": 1,\n \"exchanges\": [oops]}").expect("writes");
        let error = Cassette::replay(&path).unwrap_err();
        assert!(error.contains("c.json:2:"), "{error}");
    }
}
