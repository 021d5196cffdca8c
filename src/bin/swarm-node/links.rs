//! `swarm-node links`: the links of a running node (its `--metrics` endpoint), with
//! their SLA verdicts, as a table or JSON.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use swarm::net::LinkJson;

#[derive(Debug, Args)]
pub struct LinksArgs {
    /// The metrics address of the running node (`swarm-node run --metrics ADDR`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9100")]
    metrics: SocketAddr,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn fetch(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| {
        format!("cannot reach the node's metrics endpoint at {addr} (is it running with --metrics {addr}?)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.take(64 << 20).read_to_string(&mut text)?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else { bail!("{addr} did not answer HTTP") };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{addr}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_owned(), |x| format!("{x:.digits$}"))
}

pub fn links(args: LinksArgs) -> anyhow::Result<()> {
    let body = fetch(args.metrics, "/links")?;
    let links: Vec<LinkJson> =
        serde_json::from_str(&body).context("the node's /links is not the JSON of its links")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&links)?);
        return Ok(());
    }
    println!(
        "{:<54} {:<8} {:>5} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9}  SLA latency/jitter/loss/throughput",
        "PEER", "PATH", "N", "p50 ms", "p99 ms", "max ms", "jit in", "jit out", "loss %", "rx Mbps"
    );
    for l in &links {
        let path = match (l.path.as_str(), &l.via) {
            ("detour", Some(via)) => format!("via …{}", &via[via.len().saturating_sub(8)..]),
            (path, _) => path.to_owned(),
        };
        println!(
            "{:<54} {:<8} {:>5} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9}  {}/{}/{}/{}",
            l.peer,
            path,
            l.rtt_samples,
            num(l.rtt_p50_ms, 3),
            num(l.rtt_p99_ms, 3),
            num(l.rtt_max_ms, 3),
            num(l.jitter_in_ms, 3),
            num(l.jitter_out_ms, 3),
            num(l.loss_in_ratio.map(|x| x * 100.0), 4),
            num(l.rx_bps.map(|x| x / 1e6), 3),
            l.sla.latency.state,
            l.sla.jitter.state,
            l.sla.loss.state,
            l.sla.throughput.state,
        );
    }
    println!("{} links", links.len());
    Ok(())
}
