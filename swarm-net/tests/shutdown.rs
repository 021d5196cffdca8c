//! Shutdown leaves no socket, task or connection behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_sockets_and_ports() {
    // Warm up the runtime's own descriptors (epoll, wakers) before counting.
    let (warm, _w) = start(builder("leak")).await;
    warm.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = open_fds();

    for round in 0..3 {
        let (a, _ea) = start(builder("leak").listen(quic())).await;
        let boot = first_addr(&a).await;
        let (b, _eb) = start(builder("leak").bootstrap(boot.clone())).await;
        assert!(
            eventually(Duration::from_secs(20), || async {
                view_len(&a).await == 2 && view_len(&b).await == 2
            })
            .await
        );
        let addrs = a.listen_addrs().await.unwrap();
        a.shutdown().await;
        b.shutdown().await;
        // A second shutdown, and calls after it, are harmless.
        a.shutdown().await;
        assert!(a.cluster().await.is_err());
        // The TCP port is free again.
        let tcp_port = addrs.iter().find_map(|m| {
            m.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
                _ => None,
            })
        });
        let port = tcp_port.expect("a TCP address");
        let rebind = std::net::TcpListener::bind(("127.0.0.1", port));
        assert!(rebind.is_ok(), "round {round}: port {port} still bound");
    }
    let settled = eventually(Duration::from_secs(5), || async { open_fds() <= before }).await;
    assert!(settled, "descriptors: {} before, {} after", before, open_fds());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_stops_the_node() {
    let (a, mut events) = start(builder("drop")).await;
    drop(a);
    // The event stream ends when the driver has stopped.
    let ended =
        tokio::time::timeout(Duration::from_secs(5), async { while events.next().await.is_some() {} }).await;
    assert!(ended.is_ok(), "driver stops when the last handle is dropped");
}
