//! Placement between in-process nodes on loopback: leases over `/swarm/lease/1`, expiry,
//! a dead submitter, concurrent submitters, gangs, and impossible tasks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{builder, eventually, first_addr, shutdown_all, start};
use swarm_core::place::{leased_in, rank, PlaceError, ScoreWeights, TaskSpec};
use swarm_net::{Node, NodeError, PeerId};

/// Starts `specs.len()` nodes (GPU inventory each), all bootstrapping from the first.
async fn cluster(namespace: &str, specs: &[&str]) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for spec in specs {
        let mut b = builder(namespace)
            .gpu_probe(Arc::new(spec.parse::<swarm_gpu::StaticProbe>().unwrap()))
            .max_lease(Duration::from_secs(120));
        if specs.len() > 8 {
            // As in the convergence test: 32 nodes on two cores need a calmer heartbeat.
            b = b.heartbeat(Duration::from_secs(2)).record_ttl(Duration::from_secs(30));
        }
        if let Some(first) = nodes.first() {
            b = b.bootstrap(first_addr(first).await);
        }
        let (node, _events) = start(b).await;
        nodes.push(node);
    }
    nodes
}

/// Waits until `node` ranks `want` nodes feasible for a one-GPU task (their records and
/// confirmed links have arrived).
async fn ready(node: &Node, want: usize) -> bool {
    let feasible = || async {
        let view = node.cluster().await.unwrap();
        let now = swarm_core::time::UnixMillis(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
        );
        let r = rank(
            &view,
            &node.peer_id(),
            &TaskSpec::new("probe", 1),
            &leased_in(&view),
            now,
            &ScoreWeights::default(),
        );
        (view.len(), r)
    };
    let ok =
        eventually(Duration::from_secs(60), || async { feasible().await.1.feasible.len() >= want }).await;
    if !ok {
        let (len, r) = feasible().await;
        println!("{} of {len} feasible; rejected: {:?}", r.feasible.len(), r.rejected_by());
    }
    ok
}

fn gpu_count(spec: &str) -> u32 {
    use swarm_gpu::GpuProbe as _;
    spec.parse::<swarm_gpu::StaticProbe>().unwrap().sample().unwrap().devices.len() as u32
}

fn task(id: &str, gpus: u16, lease: Duration) -> TaskSpec {
    TaskSpec { lease, ..TaskSpec::new(id, gpus) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_granted_renewed_released_and_expire() {
    let nodes = cluster("place-basic", &["8xH100-80GB", "2xA100-80GB", "1xRTX4090-24GB"]).await;
    for n in &nodes {
        assert!(ready(n, 3).await, "every node sees the others feasible");
    }
    let (a, b) = (&nodes[0], &nodes[1]);

    // Eight GPUs fit only node 0; node 1 places them there.
    let big = b.place(task("big", 8, Duration::from_secs(2))).await.unwrap();
    assert_eq!(big.peers(), vec![a.peer_id()]);
    assert_eq!(big.nodes[0].gpus.len(), 8);
    let held = a.leases().await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].holder, b.peer_id());

    // A second eight-GPU task cannot fit while the first holds them.
    let err = b.place(task("big-2", 8, Duration::from_secs(2))).await.unwrap_err();
    assert!(
        matches!(err, NodeError::Place(PlaceError::Exhausted { .. } | PlaceError::Infeasible { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("big-2"), "{err}");

    // Renewal keeps it; after its lease runs out unrenewed, the capacity is free again.
    assert!(b.renew(&big).await.unwrap() > Duration::from_secs(1));
    assert!(eventually(Duration::from_secs(6), || async { a.leases().await.unwrap().is_empty() }).await);
    assert!(a.stats().await.unwrap().leases.expired >= 1);
    assert!(
        matches!(b.renew(&big).await, Err(NodeError::LeaseRefused { .. })),
        "an expired lease cannot be renewed"
    );
    let again = b.place(task("big-3", 8, Duration::from_secs(30))).await.unwrap();
    assert_eq!(again.peers(), vec![a.peer_id()]);

    // Release ends it at once; a second release is refused.
    b.release(&again).await.unwrap();
    assert!(a.leases().await.unwrap().is_empty());
    assert!(b.release(&again).await.is_err());

    // Only the holder can release a lease.
    let mine = b.place(task("mine", 8, Duration::from_secs(30))).await.unwrap();
    let stolen = nodes[2].release(&mine).await.unwrap_err();
    assert!(stolen.to_string().contains("another holder"), "{stolen}");
    b.release(&mine).await.unwrap();
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_submitter_leaks_nothing_after_its_ttl() {
    let nodes = cluster("place-dead", &["4xH100-80GB", "none"]).await;
    assert!(ready(&nodes[1], 1).await);
    let p = nodes[1].place(task("orphan", 4, Duration::from_secs(2))).await.unwrap();
    assert_eq!(p.peers(), vec![nodes[0].peer_id()]);
    nodes[1].shutdown().await;
    assert_eq!(nodes[0].leases().await.unwrap().len(), 1);
    assert!(
        eventually(Duration::from_secs(6), || async { nodes[0].leases().await.unwrap().is_empty() }).await
    );
    // The freed GPUs are advertised free and can be placed again.
    let p = nodes[0].place(task("after", 4, Duration::from_secs(5))).await.unwrap();
    assert_eq!(p.peers(), vec![nodes[0].peer_id()]);
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impossible_task_names_its_constraint_and_nearest_node() {
    let nodes = cluster("place-impossible", &["2xH100-80GB", "4xA100-80GB"]).await;
    assert!(ready(&nodes[0], 2).await);
    let err = nodes[0].place(task("huge", 16, Duration::from_secs(5))).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no node can take task huge") && text.contains("gpus: 2"), "{text}");
    assert!(
        text.contains(&format!("nearest {}: 4 eligible free GPUs, 16 wanted", nodes[1].peer_id())),
        "{text}"
    );
    let mut h200 = task("h200", 1, Duration::from_secs(5));
    h200.gpu_models = vec!["H200".into()];
    let text = nodes[0].place(h200).await.unwrap_err().to_string();
    assert!(text.contains("0 eligible free GPUs"), "{text}");
    let bad = nodes[0].place(task("bad id", 1, Duration::from_secs(5))).await.unwrap_err();
    assert!(bad.to_string().contains("printable"), "{bad}");
    shutdown_all(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_is_reserved_whole_on_distinct_nodes() {
    let nodes = cluster("place-gang", &["2xH100-80GB", "2xH100-80GB", "2xH100-80GB", "none"]).await;
    assert!(ready(&nodes[3], 3).await);
    let mut gang = task("gang", 2, Duration::from_secs(30));
    gang.nodes = 3;
    gang.member_limits.max_rtt = Some(Duration::from_millis(50));
    let p = nodes[3].place(gang.clone()).await.unwrap();
    let members: HashSet<PeerId> = p.peers().into_iter().collect();
    assert_eq!(members.len(), 3);
    assert!(p.worst_member_rtt_ms.is_some_and(|w| w < 50.0), "{p:?}");
    // A second gang does not fit while the first holds every GPU, and leaves nothing.
    gang.id = "gang-2".into();
    let err = nodes[3].place(gang).await.unwrap_err();
    assert!(matches!(err, NodeError::Place(_)), "{err}");
    nodes[3].release(&p).await.unwrap();
    for n in &nodes[..3] {
        assert!(n.leases().await.unwrap().is_empty());
    }
    shutdown_all(&nodes).await;
}

/// A `place` future dropped mid-gang, after some members granted and before it returned,
/// leaves no lease behind: the grants it had are released as it drops, and grants still
/// in flight by the driver when they arrive. The leases would otherwise live 120 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_placement_releases_what_it_was_granted() {
    let nodes = cluster("place-cancel", &["2xH100-80GB", "2xH100-80GB", "2xH100-80GB", "none"]).await;
    assert!(ready(&nodes[3], 3).await);
    let members = nodes[..3].to_vec();
    let live = |task: String| {
        let members = members.clone();
        async move {
            let mut n = 0;
            for m in &members {
                n += m.leases().await.unwrap().iter().filter(|l| l.task == task).count();
            }
            n
        }
    };
    let mut cut_mid_gang = 0;
    for i in 0..30 {
        let id = format!("cancel-{i}");
        let mut gang = task(&id, 2, Duration::from_secs(120));
        gang.nodes = 3;
        // Drop the placement as soon as one member holds a lease for it.
        let placing = nodes[3].place(gang);
        let watch = async {
            loop {
                if live(id.clone()).await > 0 {
                    return;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            placed = placing => {
                // Finished first: not a cut; give its leases back.
                nodes[3].release(&placed.unwrap()).await.unwrap();
            }
            () = watch => {
                cut_mid_gang += 1;
            }
        }
        let gone = eventually(Duration::from_secs(5), || {
            let live = live(id.clone());
            async move { live.await == 0 }
        })
        .await;
        assert!(gone, "{id}: leases left behind by a dropped placement");
        if cut_mid_gang >= 5 {
            break;
        }
    }
    println!("{cut_mid_gang} placements dropped mid-gang");
    assert!(cut_mid_gang >= 1, "no placement was dropped mid-gang in 30 tries");
    shutdown_all(&nodes).await;
}

/// 8 submitters place 512 tasks (1-4 GPUs each, a quarter of them gangs of two nodes, 8
/// in flight per submitter: about three times the 56 GPUs of the 32 nodes) and hold each
/// for a few ms; a refused task retries. Every grant is checked against a ledger of GPUs
/// held right now: a GPU granted while the ledger holds it is a double booking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submitters_never_double_book() {
    let specs: Vec<&str> =
        (0..32).map(|i| ["2xH100-80GB", "1xA100-80GB", "4xL40S-48GB", "none"][i % 4]).collect();
    let nodes = cluster("place-contention", &specs).await;
    let capacity: HashMap<PeerId, u32> =
        nodes.iter().zip(&specs).map(|(n, s)| (n.peer_id(), gpu_count(s))).collect();
    for n in &nodes[..8] {
        assert!(ready(n, 20).await, "submitters see most of the cluster");
    }
    let ledger: Arc<Mutex<HashSet<(PeerId, u32)>>> = Arc::default();
    let mut workers = Vec::new();
    for (s, node) in nodes[..8].iter().enumerate() {
        for w in 0..8u64 {
            let (node, ledger, capacity) = (node.clone(), ledger.clone(), capacity.clone());
            workers.push(tokio::spawn(async move {
                let (mut placed, mut refused) = (0u32, 0u32);
                for t in 0..8 {
                    let k = 1 + ((s as u64 * 31 + w * 7 + t) % 4) as u16;
                    let id = format!("s{s}-w{w}-t{t}");
                    // One task in four is a gang of two nodes, reserved all or nothing.
                    let members = if (w + t) % 4 == 0 { 2 } else { 1 };
                    // A refused task waits for capacity and tries again, as a job queue would.
                    let p = loop {
                        let spec = TaskSpec { nodes: members, ..task(&id, k, Duration::from_secs(30)) };
                        match node.place(spec).await {
                            Ok(p) => break p,
                            Err(NodeError::Place(_)) if refused < 10_000 => {
                                refused += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            Err(e) => panic!("{id}: {e}"),
                        }
                    };
                    {
                        let mut held = ledger.lock().unwrap();
                        assert_eq!(p.nodes.len(), usize::from(members), "{id}: all or nothing");
                        let distinct: HashSet<PeerId> = p.peers().into_iter().collect();
                        assert_eq!(distinct.len(), p.nodes.len(), "{id}: distinct members");
                        for n in &p.nodes {
                            assert_eq!(n.gpus.len(), usize::from(k));
                            for g in &n.gpus {
                                assert!(*g < capacity[&n.peer], "{id}: GPU {g} beyond {}", n.peer);
                                assert!(
                                    held.insert((n.peer, *g)),
                                    "{id}: GPU {g} of {} booked twice",
                                    n.peer
                                );
                            }
                        }
                    }
                    placed += 1;
                    tokio::time::sleep(Duration::from_millis(5 + (t * 3) % 20)).await;
                    {
                        let mut held = ledger.lock().unwrap();
                        for n in &p.nodes {
                            for g in &n.gpus {
                                held.remove(&(n.peer, *g));
                            }
                        }
                    }
                    node.release(&p).await.unwrap();
                }
                (placed, refused)
            }));
        }
    }
    let (mut placed, mut refused) = (0, 0);
    for w in workers {
        let (p, r) = w.await.unwrap();
        placed += p;
        refused += r;
    }
    println!("512 tasks (128 gangs) placed; {refused} placements refused for want of capacity and retried");
    assert_eq!(placed, 8 * 8 * 8, "every task was placed in the end");
    for n in &nodes {
        assert!(n.leases().await.unwrap().is_empty(), "every lease released");
    }
    shutdown_all(&nodes).await;
}

/// Leases live in memory: a node restarted with its old keys refuses new leases for its
/// restart grace (it may have granted some it forgot), and renewals of leases from its
/// earlier run fail, so their holders know to place again. A node with fresh keys has
/// nothing outstanding and grants at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_waits_out_the_leases_it_forgot() {
    use swarm_core::place::wire::{LeaseRequest, LeaseResponse};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("gpu.key");
    let gpu = || Arc::new("2xH100-80GB".parse::<swarm_gpu::StaticProbe>().unwrap());
    let grace = Duration::from_secs(5);
    let (holder, _e) = start(builder("place-restart")).await;
    let boot = first_addr(&holder).await;
    let provider =
        || builder("place-restart").gpu_probe(gpu()).identity_file(&key).lease_restart_grace(grace);
    let (first, _e1) = start(provider().bootstrap(boot.clone())).await;
    assert!(ready(&holder, 2).await);
    let p = holder.place(task("before", 2, Duration::from_secs(60))).await.unwrap();
    assert_eq!(p.peers(), vec![first.peer_id()], "the holder has no GPU");
    let reserve = |id: &str| LeaseRequest::Reserve {
        task: swarm_core::bounded::BoundedString::try_new(id).unwrap(),
        demand: swarm_core::place::wire::GpuDemand {
            count: 1,
            min_memory_mib: 0,
            min_compute_capability: None,
            models: Default::default(),
        },
        ttl_ms: 10_000,
    };
    let peer = first.peer_id();
    first.shutdown().await;

    let (second, _e2) = start(provider().bootstrap(boot)).await;
    assert_eq!(second.peer_id(), peer, "same keys");
    assert!(second.leases().await.unwrap().is_empty(), "leases are not persisted");
    let connected = eventually(Duration::from_secs(20), || async {
        !matches!(holder.lease_request(peer, reserve("probe")).await, Err(NodeError::Lease { .. }))
    })
    .await;
    assert!(connected);
    match holder.lease_request(peer, reserve("during")).await.unwrap() {
        LeaseResponse::Rejected { reason, .. } => assert!(reason.contains("restarted"), "{reason}"),
        other => panic!("granted during the restart grace: {other:?}"),
    }
    let renewal = holder.renew(&p).await.unwrap_err();
    assert!(renewal.to_string().contains("unknown or expired lease"), "{renewal}");
    let granted = eventually(Duration::from_secs(10), || async {
        matches!(holder.lease_request(peer, reserve("after")).await, Ok(LeaseResponse::Granted { .. }))
    })
    .await;
    assert!(granted, "grants again after the grace");
    shutdown_all(&[holder, second]).await;
}
