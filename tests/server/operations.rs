//! Running a server: TLS, a log line per call, draining on SIGTERM.

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_speaks_tls_and_plaintext_only_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certificates(dir.path());
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let server = Server::start_with(
        dir.path(),
        None,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );

    // A client that trusts the CA is served.
    let client = Client::connect_with(&server.url, &server.admin_key, Some(ca.as_bytes()))
        .await
        .unwrap();
    let keys = client
        .admin()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap();
    assert_eq!(keys.into_inner().keys.len(), 1);

    // One that trusts another CA, or speaks plaintext, is not.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = certificates(elsewhere.path());
    let refused =
        match Client::connect_with(&server.url, &server.admin_key, Some(other.as_bytes())).await {
            Err(_) => true,
            Ok(client) => client
                .admin()
                .list_api_keys(pb::ListApiKeysRequest::default())
                .await
                .is_err(),
        };
    assert!(
        refused,
        "a certificate the client does not trust was accepted"
    );
    let plain = server.url.replace("https://", "http://");
    let refused = match Client::connect(&plain, &server.admin_key).await {
        Err(_) => true,
        Ok(client) => client
            .admin()
            .list_api_keys(pb::ListApiKeysRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "plaintext was answered on the TLS port");

    // Without TLS, only loopback, unless plaintext is allowed outright.
    let out = common::cli(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("loopback only") && stderr.contains("--tls-cert"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_logged_under_its_request_id_and_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), None, &["--log-format", "json"]);
    let viewer = server.client(&server.key("acme", "viewer").await).await;
    let mut request = tonic::Request::new(start(WAITING, ""));
    request
        .metadata_mut()
        .insert("x-request-id", "req-7f3a".parse().unwrap());
    let refused = viewer.executions().start(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut found = None;
    for _ in 0..100 {
        found = server
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("req-7f3a"))
            .cloned();
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let line = found.expect("a log line with the request id");
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    let span = &record["span"];
    assert_eq!(span["name"], "rpc", "{line}");
    assert_eq!(span["request_id"], "req-7f3a", "{line}");
    assert_eq!(span["tenant"], "acme", "{line}");
    assert_eq!(span["rpc"], "/orchestrator.v1.Executions/Start", "{line}");
    assert_eq!(record["fields"]["message"], "refused", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_calls_finish_and_the_next_start_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(dir.path(), None, &["--grace", "20"]);
    let admin_key = server.admin_key.clone();
    let developer = server.client(&server.key("acme", "developer").await).await;
    developer
        .plugins()
        .install(tokio_stream::iter(guest_chunks(
            "guest",
            pb::Grants::default(),
        )))
        .await
        .unwrap();
    let key = server.key("acme", "operator").await;
    let client = server.client(&key).await;
    let flow = "name: drained\ntasks:\n  - { id: slow, uses: guest, with: { mode: sleep, ms: 1500 } }\n  - { id: approve, needs: [slow], wait: { signal: go, timeout: 1h } }\noutputs:\n  by: ${{ tasks.approve.output.by }}\n";
    client
        .executions()
        .start(start(flow, "drained-1"))
        .await
        .unwrap();
    // A watch of an execution that will not end before the server stops:
    // it must not keep the server from stopping.
    client
        .executions()
        .start(start(WAITING, "watched"))
        .await
        .unwrap();
    let _open_watch = client
        .executions()
        .watch(pb::WatchRequest {
            execution_id: "watched".into(),
            from: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = client
        .executions()
        .watch(pb::WatchRequest {
            execution_id: "drained-1".into(),
            from: 0,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(event) = events.next().await {
        if event.unwrap().kind == "attempt_started" {
            break;
        }
    }
    let sent = std::time::Instant::now();
    let status = server.terminate();
    let took = sent.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= std::time::Duration::from_millis(800),
        "it stopped before the running call finished: {took:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(15),
        "an open watch held it: {took:?}"
    );

    // The next start takes the execution up; the call that finished while
    // draining is not made again.
    let server = Server::start_in(dir.path(), Some(admin_key));
    let client = server.client(&key).await;
    client
        .executions()
        .signal(pb::SignalRequest {
            execution_id: "drained-1".into(),
            name: "go".into(),
            payload_json: r#"{"by":"after the restart"}"#.into(),
            ..pb::SignalRequest::default()
        })
        .await
        .unwrap();
    let done = client
        .executions()
        .await_result(pb::AwaitRequest {
            execution_id: "drained-1".into(),
            timeout_ms: 30_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status, "succeeded", "{done:?}");
    let events = client
        .executions()
        .get_events(pb::GetEventsRequest {
            execution_id: "drained-1".into(),
            from: 0,
            page_size: 1000,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let slow_attempts = events
        .iter()
        .filter(|e| e.kind == "attempt_started" && e.fields_json.contains(r#""task":"slow""#))
        .count();
    assert_eq!(slow_attempts, 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_requests_are_limited() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), None, &["--max-connections", "2"]);
    let address = server.url.trim_start_matches("http://").to_owned();

    // Two idle connections take every place: a third is closed at once.
    let held: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(&address).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut third = std::net::TcpStream::connect(&address).unwrap();
    third
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    match third.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("a connection over the limit is closed, not {other:?}"),
    }

    // Once they close, calls are served again.
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let client = server.client(&server.admin_key).await;
    client
        .admin()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap();

    // A request over 4 MiB is refused, and the server goes on.
    let huge = format!("name: huge\n# {}\ntasks: []\n", "x".repeat(5 << 20));
    let refused = client
        .executions()
        .start(start(&huge, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("too large"), "{refused:?}");
    client
        .admin()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap();
}

/// One HTTP/2 frame: its type, flags and payload.
fn read_frame(stream: &mut std::net::TcpStream) -> std::io::Result<(u8, u8, Vec<u8>)> {
    use std::io::Read;
    let mut header = [0u8; 9];
    stream.read_exact(&mut header)?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload)?;
    Ok((header[3], header[4], payload))
}

/// A raw HTTP/2 connection to `address` past the handshake: the value of
/// each setting the server announced.
fn h2_connect(address: &str) -> (std::net::TcpStream, Vec<(u16, u32)>) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    loop {
        let (kind, flags, payload) = read_frame(&mut stream).unwrap();
        if kind == 4 && flags & 1 == 0 {
            stream.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).unwrap();
            let settings = payload
                .chunks_exact(6)
                .map(|s| {
                    (
                        u16::from_be_bytes([s[0], s[1]]),
                        u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
                    )
                })
                .collect();
            return (stream, settings);
        }
    }
}

#[test]
fn keepalive_drops_a_peer_that_stops_answering_pings() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), None, &["--keepalive", "1"]);
    let address = server.url.trim_start_matches("http://").to_owned();

    // The server announces its limit of calls in flight per connection
    // (SETTINGS_MAX_CONCURRENT_STREAMS).
    let (mut silent, settings) = h2_connect(&address);
    assert!(settings.contains(&(3, 256)), "{settings:?}");
    let (mut answering, _) = h2_connect(&address);

    // A peer that answers every ping keeps its connection.
    let begun = Instant::now();
    let mut pings = 0;
    while begun.elapsed() < Duration::from_secs(4) {
        let (kind, flags, payload) = read_frame(&mut answering).expect("still open");
        if kind == 6 && flags & 1 == 0 {
            pings += 1;
            let mut ack = vec![0, 0, 8, 6, 1, 0, 0, 0, 0];
            ack.extend_from_slice(&payload);
            answering.write_all(&ack).unwrap();
        }
    }
    assert!(pings >= 2, "pinged {pings} times in 4 s");

    // One that never answered was pinged, then dropped (GOAWAY, then the
    // end of the stream) within the interval and the timeout of 1 s each.
    let mut seen = Vec::new();
    loop {
        match read_frame(&mut silent) {
            Ok((kind, _, _)) => seen.push(kind),
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                    ),
                    "dropped, not timed out: {e:?} after frames {seen:?}"
                );
                break;
            }
        }
    }
    assert!(seen.contains(&6), "pinged first: {seen:?}");
    assert!(seen.contains(&7), "told GOAWAY: {seen:?}");
}
