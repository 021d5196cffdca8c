//! The metrics endpoint as Prometheus uses it: concurrent connections, keep-alive,
//! `HEAD`, `405` with `Allow`, and idle or slow clients that never delay a scrape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Reads one response: status line, headers (lower-cased names), body (by its length).
async fn read_response(stream: &mut TcpStream, head_only: bool) -> (String, Vec<(String, String)>, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "the connection closed mid-response");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let len: usize =
        headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0u8; if head_only { 0 } else { len }];
    stream.read_exact(&mut body).await.unwrap();
    (status, headers, String::from_utf8(body).unwrap())
}

async fn request(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
) -> (String, Vec<(String, String)>, String) {
    let text = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(text.as_bytes()).await.unwrap();
    read_response(stream, method == "HEAD").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_serves_scrapers_concurrently() {
    let (node, _events) = common::start(common::builder("metrics-http")).await;
    let addr = node.serve_metrics("127.0.0.1:0".parse().unwrap()).await.unwrap();

    // Ten idle connections (a stuck scraper, a port scanner) do not delay a scrape.
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut scraper = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let (status, headers, body) = request(&mut scraper, "GET", "/metrics").await;
    let took = started.elapsed();
    println!("scrape with 10 idle connections open: {:.1} ms", took.as_secs_f64() * 1e3);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("\nswarm_records"), "{body}");
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("text/plain; version=0.0.4")));
    // Before: 5 s per idle connection ahead of it. A margin no busy machine reaches.
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Keep-alive: a second request on the same connection, then HEAD (no body).
    let (status, _, links) = request(&mut scraper, "GET", "/links").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(links.starts_with('['), "{links}");
    let (status, headers, _) = request(&mut scraper, "HEAD", "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.iter().any(|(k, _)| k == "content-length"), "{headers:?}");
    let (status, headers, _) = request(&mut scraper, "POST", "/metrics").await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.iter().any(|(k, v)| k == "allow" && v == "GET, HEAD"), "{headers:?}");
    let (status, _, _) = request(&mut scraper, "GET", "/nowhere").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // An idle keep-alive connection is closed by the server after its timeout (5 s).
    let mut rest = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(10), scraper.read(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "closed by the server: {closed:?}");
    let closed = tokio::time::timeout(Duration::from_secs(5), idle[0].read(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "an idle connection is closed too: {closed:?}");
    node.shutdown().await;
}

/// What a Prometheus user checks first: `promtool check metrics` finds nothing to say
/// about a scrape of two nodes with a measured link, and the families are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs promtool (Debian's prometheus package); `.ci/run` installs it and runs this"]
async fn a_scrape_passes_promtool() {
    let (a, _ea) = common::start(common::builder("metrics-lint")).await;
    let boot = common::first_addr(&a).await;
    let (b, _eb) = common::start(common::builder("metrics-lint").bootstrap(boot)).await;
    let measured = common::eventually(Duration::from_secs(20), || async {
        a.links().await.unwrap_or_default().iter().any(|l| l.stats.short.rtt.is_some_and(|q| q.samples >= 3))
    })
    .await;
    assert!(measured, "the link is measured");
    let addr = a.serve_metrics("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut http = TcpStream::connect(addr).await.unwrap();
    let (status, headers, classic) = request(&mut http, "GET", "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("text/plain; version=0.0.4")));
    for family in [
        "swarm_link_rtt_seconds_bucket{",
        "swarm_link_rtt_seconds_count{",
        "swarm_link_rtt_window_seconds{peer=",
        "swarm_link_goodput_bytes_per_second",
        "swarm_gpus{state=\"free\"} 1",
        "swarm_gpu_memory_bytes{gpu=\"0\",use=\"total\"} 85899345920",
        "swarm_build_info{version=",
        "swarm_tunnel_bytes_total{",
        "libp2p_bandwidth_bytes_total",
    ] {
        assert!(classic.contains(family), "{family} in {classic}");
    }
    assert!(!classic.contains("quantile"), "no quantile label outside a summary");
    let lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(classic.as_bytes());
    let out = lint.expect("promtool runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}");
    // OpenMetrics for a scraper that asks for it.
    let text =
        "GET /metrics HTTP/1.1\r\nHost: t\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n";
    http.write_all(text.as_bytes()).await.unwrap();
    let (_, headers, body) = read_response(&mut http, false).await;
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("application/openmetrics-text")));
    assert!(body.ends_with("# EOF\n") && body.contains("# TYPE swarm_tunnel_bytes counter"), "{body}");
    common::shutdown_all(&[a, b]).await;
}

trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> Option<std::process::Output>;
}

impl OutputWithStdin for std::process::Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> Option<std::process::Output> {
        use std::io::Write as _;
        let mut child =
            self.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().ok()?;
        child.stdin.take()?.write_all(input).ok()?;
        child.wait_with_output().ok()
    }
}
