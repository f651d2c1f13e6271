//! The `grpcurl` commands of `docs/api.md`, run as they are written there
//! (the address made this server's, `$KEY` a key of its own): what a
//! reader copies works, and the answers are the ones the text promises.

use crate::harness::*;

/// The shell commands of the block under the docs' grpcurl marker, a
/// line each (continuation lines joined).
fn documented_commands() -> Vec<String> {
    let docs = std::fs::read_to_string(common::root().join("docs/api.md")).unwrap();
    let (_, after) = docs
        .split_once("<!-- grpcurl examples: tests/server/grpcurl.rs runs this block -->")
        .expect("docs/api.md marks its grpcurl examples");
    let block = after
        .split_once("```sh")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a sh block follows the marker")
        .0;
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_grpcurl_commands_work_as_written() {
    let server = Server::start();
    let key = server.key("acme", "operator").await;
    let address = server.url.trim_start_matches("http://").to_owned();
    let grpcurl = tokio::task::spawn_blocking(common::tools::grpcurl_dir)
        .await
        .unwrap();
    let path = format!(
        "{}:{}",
        grpcurl.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let commands = documented_commands();
    // What each documented command must answer, in order: its exit code
    // and text its output holds.
    let expected: [(i32, &[&str]); 6] = [
        (
            0,
            &[
                "orchestrator.v1.Executions",
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
            ],
        ),
        (0, &["SERVING"]),
        (0, &["\"executionId\": \"hi-1\"", "\"created\": true"]),
        (
            0,
            &["execution_started", "task_finished", "execution_finished"],
        ),
        (0, &["\"status\": \"succeeded\"", r#"{\"sum\":2}"#]),
        (80, &["Unauthenticated"]),
    ];
    assert_eq!(commands.len(), expected.len(), "{commands:#?}");
    for (command, (code, holds)) in commands.iter().zip(expected) {
        assert!(command.starts_with("grpcurl "), "{command}");
        assert!(command.contains("127.0.0.1:7233"), "{command}");
        let run = command.replace("127.0.0.1:7233", &address);
        let out = tokio::task::spawn_blocking({
            let (path, key) = (path.clone(), key.clone());
            move || {
                std::process::Command::new("sh")
                    .args(["-c", &run])
                    .env("PATH", path)
                    .env("KEY", key)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "{command}\n{said}");
        for text in holds {
            assert!(said.contains(text), "{command}: no {text} in\n{said}");
        }
    }
}
