//! Cost of one call of each built-in plugin, as a task pays it: a fresh
//! store, instantiated from the pre-initialised component, `execute` on a
//! realistic input, dropped. Time (median of the calls) and fuel per call,
//! against the targets in docs/PERFORMANCE.md.
//!
//! `cargo bench --bench plugins`
//!
//! The `llm` call goes to a chat completions server on 127.0.0.1 started
//! here; the same exchange made by a plain TCP client is measured beside
//! it, so the plugin's own time is the difference.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_engine::plugin::{Allowed, HostPattern, builtins};
use orchestrator_engine::sandbox::{Plugin, Sandbox};
use orchestrator_engine::scheduler::TaskRequest;
use orchestrator_engine::workflow::Limits;
use serde_json::{Value, json};

const WARMUP: usize = 50;
const CALLS: usize = 500;

/// The answer of the loopback model server, as OpenAI writes it.
const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"echo","choices":[{"index":0,"message":{"role":"assistant","content":"A customer was charged twice; support refunded the second charge."},"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":12,"total_tokens":54}}"#;

/// One built-in call to measure, and its targets.
struct Case {
    plugin: &'static str,
    label: &'static str,
    input: Value,
    /// The host it may reach, if any.
    host: Option<&'static str>,
    /// Target median time per call.
    time: Duration,
    /// Target fuel per call (`u64::MAX`: none).
    fuel: u64,
}

fn main() {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio starts");
    let sandbox = Sandbox::new().expect("engine starts");
    let server = serve();
    let base_url = format!("http://{server}/v1");

    let text_1k = sample_text(1024);
    let cases = [
        Case {
            plugin: "transform",
            label: "transform `1 + 1`",
            input: json!({ "script": "1 + 1" }),
            host: None,
            time: Duration::from_micros(50),
            fuel: 200_000,
        },
        Case {
            plugin: "policy",
            label: "policy: PII in 1 KB of text",
            input: json!({ "text": text_1k, "pii": true }),
            host: None,
            time: Duration::from_micros(300),
            fuel: u64::MAX,
        },
        Case {
            plugin: "evaluation",
            label: "evaluation: rouge_l, bleu, levenshtein, contains",
            input: json!({
                "output": "A customer was charged twice for her November invoice; support refunded the second charge within five days.",
                "expected": "A customer was charged twice for her November invoice; support confirmed the duplicate and refunded it, arriving within five business days.",
                "metrics": [
                    { "metric": "rouge_l", "threshold": 0.3 },
                    { "metric": "bleu", "threshold": 0.05 },
                    { "metric": "levenshtein" },
                    { "metric": "contains", "value": "refund" }
                ]
            }),
            host: None,
            time: Duration::from_micros(200),
            fuel: u64::MAX,
        },
        Case {
            plugin: "llm",
            label: "llm: build request, exchange, parse answer",
            input: json!({
                "base_url": base_url,
                "model": "echo",
                "system": "Summarize the paragraph of a support ticket in one short sentence.",
                "prompt": sample_text(400),
                "temperature": 0,
                "max_tokens": 60
            }),
            host: Some("127.0.0.1"),
            time: Duration::from_micros(300),
            fuel: u64::MAX,
        },
    ];

    // The network part of the `llm` call, measured first: its target is
    // for the plugin's own time, the call's minus this.
    let exchange = exchange_alone(server);
    println!(
        "{:<52} {:>12} {:>12} {:>10}  target",
        "one call (fresh store + instantiate + execute)", "median", "p90", "fuel"
    );
    for case in cases {
        let (label, host, target, fuel_target) = (case.label, case.host, case.time, case.fuel);
        let plugin = plugin(&sandbox, case.plugin, host);
        let input = case.input.to_string();
        let (median, p90, fuel) = measure(&tokio, &sandbox, &plugin, &input);
        // A call that goes out is judged on its time less the exchange.
        let own = if host.is_some() {
            median.saturating_sub(exchange)
        } else {
            median
        };
        let met = own <= target && fuel <= fuel_target;
        let fuel_goal = if fuel_target == u64::MAX {
            String::new()
        } else {
            format!(", ≤ {fuel_target} fuel")
        };
        let own_time = if host.is_some() {
            format!(" ({:.1} µs without the exchange)", micros(own))
        } else {
            String::new()
        };
        println!(
            "{label:<52} {:>9.1} µs {:>9.1} µs {fuel:>10}  ≤ {} µs{fuel_goal}: {}{own_time}",
            micros(median),
            micros(p90),
            target.as_micros(),
            if met { "met" } else { "MISSED" }
        );
    }
    println!(
        "{:<52} {:>9.1} µs",
        "the same exchange from a plain TCP client",
        micros(exchange)
    );
}

/// The built-in `name`, compiled (pre-initialised) and linked, allowed to
/// reach `host` if given.
fn plugin(sandbox: &Sandbox, name: &str, host: Option<&str>) -> Plugin {
    let (_, bytes) = builtins()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} is built in"));
    let compiled = sandbox.compile(name, bytes).expect("compiles");
    let allowed = Allowed {
        http_hosts: host
            .map(|h| vec![HostPattern::parse(h).expect("a host pattern")])
            .unwrap_or_default(),
        ..Allowed::default()
    };
    sandbox
        .link(&compiled, allowed, Arc::default())
        .expect("links")
}

/// Median and 90th percentile time and the fuel of one call.
fn measure(
    tokio: &tokio::runtime::Runtime,
    sandbox: &Sandbox,
    plugin: &Plugin,
    input: &str,
) -> (Duration, Duration, u64) {
    let call = || {
        let started = Instant::now();
        let result = tokio.block_on(sandbox.run(plugin, request(input)));
        let took = started.elapsed();
        let success = result.unwrap_or_else(|f| panic!("the call fails: {f:?}"));
        (took, success.metering.fuel)
    };
    for _ in 0..WARMUP {
        call();
    }
    let mut times = Vec::with_capacity(CALLS);
    let mut fuel = 0;
    for _ in 0..CALLS {
        let (took, used) = call();
        times.push(took);
        fuel = used;
    }
    times.sort();
    (times[CALLS / 2], times[CALLS * 9 / 10], fuel)
}

fn request(input: &str) -> TaskRequest {
    TaskRequest {
        execution_id: Arc::from("bench"),
        tenant: Default::default(),
        task_id: "call".into(),
        uses: "builtin".into(),
        attempt: 1,
        input: input.into(),
        limits: Limits::default(),
        cancel: Default::default(),
        fallback: false,
        effects: Default::default(),
    }
}

/// Support-ticket prose of about `len` bytes, with an email address, a
/// phone number and a card number in it.
fn sample_text(len: usize) -> String {
    let sentences = [
        "Customer Ada Lovelace wrote in on Monday: her invoice for November was charged twice to the card on file.",
        "She can be reached at ada.lovelace@example.org or on +44 20 7946 0958 during office hours.",
        "The card ending 4111 1111 1111 1111 shows both charges.",
        "Support confirmed the duplicate charge and issued a refund the same day.",
    ];
    let mut text = String::new();
    for sentence in sentences.iter().cycle() {
        if text.len() + sentence.len() + 1 > len {
            break;
        }
        text.push_str(sentence);
        text.push(' ');
    }
    text
}

/// A chat completions server on 127.0.0.1: reads a request, answers
/// [`ANSWER`], closes.
fn serve() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1");
    let addr = listener.local_addr().expect("a bound address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = answer(stream);
        }
    });
    addr
}

fn answer(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{ANSWER}",
        ANSWER.len()
    )?;
    stream.flush()
}

/// Median time of the exchange the `llm` call makes, from a plain client.
fn exchange_alone(server: SocketAddr) -> Duration {
    let body = r#"{"model":"echo","messages":[{"role":"user","content":"hello"}]}"#;
    let mut times: Vec<Duration> = (0..CALLS)
        .map(|_| {
            let started = Instant::now();
            let mut stream = TcpStream::connect(server).expect("connects");
            write!(
                stream,
                "POST /v1/chat/completions HTTP/1.1\r\nhost: {server}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .expect("sends");
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).expect("reads");
            started.elapsed()
        })
        .collect();
    times.sort();
    times[CALLS / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
