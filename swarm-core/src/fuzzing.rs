//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay test. Each
//! takes arbitrary bytes and must return without panicking.

use std::time::{Duration, Instant};

use libp2p_identity::{Keypair, PeerId};

use crate::codec;
use crate::identity::{SignedTunnelRecord, TunnelRecordPolicy};
use crate::record::sync::{RecordDigest, MAX_DIGEST_SIZE};
use crate::record::{Namespace, NodeRecord, RecordPolicy, SignedNodeRecord};
use crate::time::UnixMillis;
use crate::view::{ClusterView, ViewConfig};

/// A fixed "now" for fuzzing: 2027-01-15.
const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

fn key(i: u8) -> Keypair {
    Keypair::ed25519_from_bytes([i; 32]).expect("any 32 bytes are an Ed25519 secret")
}

/// Author `i`'s peer id; the first four are derived once (a scalar multiplication each,
/// which per message would dominate a target's cost).
fn author(i: u8) -> PeerId {
    static FIRST: std::sync::OnceLock<[PeerId; 4]> = std::sync::OnceLock::new();
    match FIRST.get_or_init(|| [0, 1, 2, 3].map(|i| key(i).public().to_peer_id())).get(usize::from(i)) {
        Some(p) => *p,
        None => key(i).public().to_peer_id(),
    }
}

/// Signer `i` (0-2), derived once.
fn signer(i: u8) -> Keypair {
    static KEYS: std::sync::OnceLock<[Keypair; 3]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| [key(0), key(1), key(2)])[usize::from(i % 3)].clone()
}

fn namespace() -> Namespace {
    Namespace::new("fuzz").expect("a valid namespace")
}

/// Decodes and checks `data` as a record from a fixed author.
pub fn record_decode(data: &[u8]) {
    let _ = NodeRecord::decode_verified(data, &author(1), &namespace(), NOW, &RecordPolicy::default());
}

/// Splits `data` into messages (first byte: author and length) fed to a small view:
/// authors 0-2 sign the message as a record's body (so the fuzzer reaches the checks
/// behind the signature), author 3's messages are whole envelopes. Every few messages
/// the view answers a sync digest taken from the data.
pub fn view_ingest(data: &[u8]) {
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let config = ViewConfig { max_records: 4, ..ViewConfig::default() };
    let mut view = ClusterView::new(author(0), namespace(), config);
    let mut rest = data;
    let mut step = 0u64;
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head >> 2).min(tail.len());
        let (msg, next) = tail.split_at(len);
        step += 1;
        let now = t0 + Duration::from_millis(step * 997);
        let signed = match head & 3 {
            3 => None,
            i => SignedNodeRecord::sign_body(msg, &signer(i)),
        };
        let _ = view.handle_record(now, NOW, signed.as_deref().unwrap_or(msg));
        if step.is_multiple_of(8) {
            if let Ok(digest) = codec::decode::<RecordDigest>(msg, MAX_DIGEST_SIZE) {
                assert!(view.answer(&digest).records.len() <= 4);
            }
        }
        view.handle_timeout(now);
        while view.poll_event().is_some() {}
        assert!(view.len() <= 4);
        rest = next;
    }
}

/// Parses `data` as a WireGuard message and reads every field; then drives the rest as
/// a sequence of counters through one replay window (each 3 bytes: a step forward or
/// back from the highest counter seen, so the window slides, wraps its words, and sees
/// old, duplicate and out-of-order counters), checked against a model: a counter is
/// accepted once, never when it is [`WINDOW`] or more behind the highest, always when it
/// is new and inside the window.
///
/// [`WINDOW`]: crate::tunnel::replay::WINDOW
pub fn tunnel_wire(data: &[u8]) {
    use crate::tunnel::replay::{ReplayWindow, REJECT_AFTER_MESSAGES, WINDOW};
    use crate::tunnel::wire::Message;
    match Message::parse(data) {
        Ok(Message::Initiation(m)) => {
            let _ = (m.sender(), m.noise(), m.mac1(), m.mac2(), m.mac1_input(), m.mac2_input());
        }
        Ok(Message::Response(m)) => {
            let _ = (m.sender(), m.receiver(), m.noise(), m.mac1(), m.mac2());
        }
        Ok(Message::CookieReply(m)) => {
            let _ = (m.receiver(), m.nonce(), m.sealed_cookie());
        }
        Ok(Message::Transport(m)) => {
            let _ = (m.receiver(), m.sealed());
        }
        Err(_) => {}
    }
    let mut window = ReplayWindow::new();
    let mut accepted = std::collections::HashSet::new();
    let mut highest: Option<u64> = None;
    for step in data.chunks_exact(3) {
        // Top bit: backwards; the rest: how far (up to 8 M), scaled so big jumps happen.
        let raw = u32::from_le_bytes([step[0], step[1], step[2], 0]);
        let back = raw & 0x80_0000 != 0;
        let distance = u64::from(raw & 0x7F_FFFF) >> (step[2] & 3);
        let base = highest.unwrap_or(0);
        let counter = if back { base.saturating_sub(distance) } else { base.saturating_add(distance) };
        let result = window.mark(counter);
        let fresh = !accepted.contains(&counter);
        let inside = highest.is_none_or(|h| counter > h || h - counter < WINDOW);
        if counter >= REJECT_AFTER_MESSAGES {
            assert!(result.is_err(), "counter {counter} past the limit");
        } else if fresh && inside {
            assert!(result.is_ok(), "new counter {counter} inside the window (highest {highest:?})");
        } else {
            assert!(result.is_err(), "counter {counter} replayed or too old (highest {highest:?})");
        }
        if result.is_ok() {
            accepted.insert(counter);
            highest = Some(highest.map_or(counter, |h| h.max(counter)));
        }
    }
}

/// Splits `data` into a body and a 64-byte signature and verifies them.
pub fn tunnel_record(data: &[u8]) {
    let split = data.len().saturating_sub(64);
    let (body, sig) = data.split_at(split);
    if let Some(record) = SignedTunnelRecord::from_parts(body, sig) {
        let _ = record.verify(&author(1), NOW, &TunnelRecordPolicy::default());
    }
}

/// Lease messages and adverts from the network: every prefix-framed message is decoded
/// as a request (answered by one node's [`LeaseService`](crate::place::LeaseService) over
/// four GPUs, for one of two holders), as a response and as an advert. No GPU is ever held twice, or held outside the four.
pub fn lease_messages(data: &[u8]) {
    use crate::place::wire::{LeaseRequest, LeaseResponse};
    use crate::place::LeasedGpus;
    // A service with history (leases granted, renewed, released), built once and
    // restored per input: inputs start deep instead of from an empty table.
    let &(t0, ref prepared) = prepared_lease_service();
    let mut service = prepared.clone();
    let mut rest = data;
    let mut step = 0u64;
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head >> 1).min(tail.len());
        let (msg, next) = tail.split_at(len);
        let holder = author(head & 1);
        step += 1;
        let now = t0 + Duration::from_millis(step * 7919);
        let _ = LeaseResponse::decode(msg);
        let _ = crate::codec::decode::<LeasedGpus>(msg, 512);
        if let Ok(request) = LeaseRequest::decode(msg) {
            let _ = service.handle(now, holder, request);
        }
        while service.poll_event().is_some() {}
        let _ = service.poll_advert();
        let mut held: Vec<u32> = service.table().held().collect();
        let n = held.len();
        held.sort_unstable();
        held.dedup();
        assert!(held.len() == n && held.iter().all(|g| *g < 4), "{held:?}");
        rest = next;
    }
}

/// The lease service [`lease_messages`] starts from (and its epoch): four GPUs, two
/// holders, leases granted, one renewed, one released, one still held.
fn prepared_lease_service() -> &'static (Instant, crate::place::LeaseService) {
    use crate::place::wire::{GpuDemand, LeaseRequest};
    use crate::place::{LeaseConfig, LeaseService, LeaseTable};
    static PREPARED: std::sync::OnceLock<(Instant, LeaseService)> = std::sync::OnceLock::new();
    PREPARED.get_or_init(|| {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let devices = (0..4).map(fuzz_gpu).collect();
        let mut service = LeaseService::new(LeaseTable::new_first_start(t0, LeaseConfig::default()), devices);
        let reserve = |task: &str, count| LeaseRequest::Reserve {
            task: crate::bounded::BoundedString::try_new(task).unwrap_or_default(),
            demand: GpuDemand {
                count,
                min_memory_mib: 0,
                min_compute_capability: None,
                models: crate::bounded::BoundedVec::new(),
            },
            ttl_ms: 60_000,
        };
        for (holder, request) in [
            (0u8, reserve("a", 1)),
            (1, reserve("b", 2)),
            (0, LeaseRequest::Renew { lease: 1, ttl_ms: 30_000 }),
            (1, LeaseRequest::Release { lease: 2 }),
            (1, reserve("c", 1)),
        ] {
            let _ = service.handle(t0, author(holder), request);
            while service.poll_event().is_some() {}
            let _ = service.poll_advert();
        }
        (t0, service)
    })
}

/// GPU `index` of the fuzzed node: an idle 80 GB A100.
fn fuzz_gpu(index: u32) -> crate::gpu::GpuDevice {
    crate::gpu::GpuDevice {
        index,
        model: crate::bounded::BoundedString::try_new("A100").unwrap_or_default(),
        memory_total_mib: 81_920,
        memory_used_mib: 0,
        utilization_pct: 0,
        compute_capability: Some(crate::gpu::ComputeCapability { major: 8, minor: 0 }),
    }
}

/// Two tunnels with a completed handshake and some data exchanged: what
/// [`tunnel_responder`] restores per input (a copy, [`Tunnels::try_clone`]), instead of
/// paying for two key pairs and a handshake (eight scalar multiplications) each time.
///
/// [`Tunnels::try_clone`]: crate::tunnel::Tunnels::try_clone
struct PreparedPair {
    a: crate::tunnel::Tunnels,
    b: crate::tunnel::Tunnels,
    /// `b` after it sent data that `a` did not answer: its timers start a handshake of
    /// its own 15 s later (three scalar multiplications), so an input starts from here
    /// only when it asks to, and runs `b`'s timers once (see [`tunnel_responder`]). (A
    /// state with that handshake under way cannot be copied: [`Tunnels::try_clone`].)
    ///
    /// [`Tunnels::try_clone`]: crate::tunnel::Tunnels::try_clone
    b_waiting: crate::tunnel::Tunnels,
    pa: crate::tunnel::PeerHandle,
    pb: crate::tunnel::PeerHandle,
    now: Instant,
    /// Genuine initiations from `a` (newer timestamps one after the other), made once:
    /// an input replays and mutates them instead of paying two scalar multiplications
    /// for each.
    initiations: Vec<Vec<u8>>,
}

const FUZZ_A: ([u8; 4], u16) = ([10, 0, 0, 1], 1000);
const FUZZ_B: ([u8; 4], u16) = ([10, 0, 0, 2], 2000);

/// Delivers what each side has to send, a bounded number of rounds, and leaves `b` with
/// nothing queued.
fn shuttle(a: &mut crate::tunnel::Tunnels, b: &mut crate::tunnel::Tunnels, now: Instant, buf: &mut [u8]) {
    let (aa, ab) = (FUZZ_A.into(), FUZZ_B.into());
    for _ in 0..8 {
        while let Some(t) = b.poll_transmit(now, buf) {
            let _ = a.handle_datagram(now, ab, &mut buf[..t.len]);
        }
        let Some(t) = a.poll_transmit(now, buf) else { break };
        let _ = b.handle_datagram(now, aa, &mut buf[..t.len]);
    }
    while b.poll_transmit(now, buf).is_some() {}
}

fn prepare_pair() -> Option<PreparedPair> {
    use crate::tunnel::{TunnelConfig, Tunnels};
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let unix = Duration::from_secs(1_800_000_000);
    let public = |k: [u8; 32]| crate::identity::TunnelPublicKey::from_secret(&k).0;
    // A low load threshold, so cookie replies and the rate limiter are reached too.
    let config = TunnelConfig { load_threshold: 8, queue_per_peer: 4, ..TunnelConfig::default() };
    let mut a = Tunnels::new([1; 32], config.clone(), now, unix, [1; 32]);
    let mut b = Tunnels::new([2; 32], config, now, unix, [2; 32]);
    let pa = a.add_peer(public([2; 32]), Some(FUZZ_B.into())).ok()?;
    let pb = b.add_peer(public([1; 32]), Some(FUZZ_A.into())).ok()?;
    let mut buf = vec![0u8; 2048];
    a.open(now, pa);
    shuttle(&mut a, &mut b, now, &mut buf);
    // Some data both ways, so the sessions' windows and counters have a history.
    for i in 0..4u8 {
        if let Ok(Some(t)) = a.send_datagram(now, pa, &[i; 100], &mut buf) {
            let mut d = buf[..t.len].to_vec();
            let _ = b.handle_datagram(now, FUZZ_A.into(), &mut d);
        }
        if let Ok(Some(t)) = b.send_datagram(now, pb, &[i; 60], &mut buf) {
            let mut d = buf[..t.len].to_vec();
            let _ = a.handle_datagram(now, FUZZ_B.into(), &mut d);
        }
    }
    // `b` has sent data last, so its timers start a handshake 15 s later unless it hears
    // from `a`; the common state has `a` answer, so that time alone costs no handshake.
    let b_waiting = b.try_clone([6; 32])?;
    if let Ok(Some(t)) = a.send_datagram(now, pa, &[9; 40], &mut buf) {
        let mut d = buf[..t.len].to_vec();
        let _ = b.handle_datagram(now, FUZZ_A.into(), &mut d);
    }
    while a.poll_event().is_some() || b.poll_event().is_some() {}
    let mut initiations = Vec::new();
    let mut later = a.try_clone([5; 32])?;
    for i in 1..=8u32 {
        let at = now + Duration::from_millis(25 * u64::from(i));
        later.force_rekey(at, pa);
        if let Some(t) = later.poll_transmit(at, &mut buf) {
            initiations.push(buf[..t.len].to_vec());
        }
    }
    Some(PreparedPair { a, b, b_waiting, pa, pb, now, initiations })
}

thread_local! {
    static PREPARED_PAIR: Option<PreparedPair> = prepare_pair();
}

/// `data`: raw bytes, or genuine initiations and data packets from its peer with bytes
/// flipped, with time moving on, against a responder restored per input from a prepared
/// pair (handshake done, data exchanged). Checks that nothing panics, that an
/// unauthenticated datagram gets no answer but a cookie reply, and that memory stays
/// bounded.
pub fn tunnel_responder(data: &[u8]) {
    PREPARED_PAIR.with(|prepared| {
        let Some(p) = prepared else { return };
        // An input whose length is 2 or 3 modulo 4 starts from `b` waiting for an answer,
        // where a run of its timers may start a handshake (three scalar multiplications):
        // one run there, two from the common state.
        let (b, timer_runs) = if data.len() & 2 == 0 { (&p.b, 2) } else { (&p.b_waiting, 1) };
        let (Some(a), Some(b)) = (p.a.try_clone([3; 32]), b.try_clone([4; 32])) else { return };
        responder_steps(a, b, p, timer_runs, data);
    });
}

/// Genuine initiations (four scalar multiplications at the responder when intact) per
/// input, at most.
const MAX_HANDSHAKES: u32 = 1;

fn responder_steps(
    mut a: crate::tunnel::Tunnels,
    mut b: crate::tunnel::Tunnels,
    p: &PreparedPair,
    max_timer_runs: u32,
    data: &[u8],
) {
    let (pa, pb, mut now) = (p.pa, p.pb, p.now);
    let (mut handshakes, mut timer_runs) = (0, 0);
    let aa: std::net::SocketAddr = FUZZ_A.into();
    // An input whose length is odd finds `b` under load: initiations then need mac2, and
    // get cookie replies (that path, without the responder's four scalar multiplications).
    if data.len() % 2 == 1 {
        b.mark_loaded(now);
    }
    let mut rest = data;
    let mut out = vec![0u8; 2048];
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head >> 2).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        rest = next;
        let mut datagram = match head & 3 {
            0 => chunk.to_vec(),
            1 => {
                now += Duration::from_millis(25);
                if handshakes >= MAX_HANDSHAKES {
                    continue;
                }
                handshakes += 1;
                let pick = chunk.first().map_or(0, |&c| usize::from(c)) % p.initiations.len().max(1);
                match p.initiations.get(pick) {
                    Some(init) => init.clone(),
                    None => continue,
                }
            }
            2 => match a.send_datagram(p.now, pa, chunk, &mut out) {
                Ok(Some(t)) => out[..t.len].to_vec(),
                _ => continue,
            },
            _ => {
                // Time passes at `b`: its timers run (keepalives, rekeys, sessions and
                // keys expiring), what it sends is dropped. `a` only seals packets, on
                // its own clock, so its sessions stay fresh and it never pays for a
                // handshake here.
                now += Duration::from_secs(u64::from(head >> 2));
                if timer_runs < max_timer_runs {
                    timer_runs += 1;
                    b.handle_timeout(now);
                    while b.poll_transmit(now, &mut out).is_some() {}
                }
                continue;
            }
        };
        // Flip bytes named by the chunk (position, xor mask) pairs.
        if head & 3 != 0 {
            for pair in chunk.chunks_exact(2) {
                let at = usize::from(pair[0]) % datagram.len().max(1);
                if let Some(byte) = datagram.get_mut(at) {
                    *byte ^= pair[1];
                }
            }
        }
        let verdict = b.handle_datagram(now, aa, &mut datagram).map(|_| ());
        // Authenticated data with a payload we do not understand is still authenticated.
        let unauthenticated = verdict.is_err_and(|r| r != crate::tunnel::DropReason::BadPayload);
        while let Some(t) = b.poll_transmit(now, &mut out) {
            if unauthenticated {
                assert_eq!(t.len, 64, "only a cookie reply answers a refused datagram");
            }
            assert!(t.len <= 2048);
        }
        while b.poll_event().is_some() {}
        while a.poll_event().is_some() {}
        assert!(b.status(pb, now).is_some_and(|s| s.queued <= 4));
        assert!(b.peer_memory(pb).is_some_and(|m| m <= 64 * 1024));
    }
}

/// Look-up messages from the network (`/swarm/find/1`): the input as a request, and as
/// answers (each framed by a big-endian u16 length) fed to a look-up, each to the
/// peer asked longest ago; one that does not decode counts as that peer's failure.
pub fn lookup_messages(data: &[u8]) {
    use crate::diversity::lookup::MAX_FIND_REQUEST_SIZE;
    use crate::diversity::lookup::{FindAnswer, FindRequest, Lookup, LookupLimits, MAX_FIND_ANSWER_SIZE};
    let _ = codec::decode::<FindRequest>(data, MAX_FIND_REQUEST_SIZE);
    let limits = LookupLimits::default();
    let mut lookup: Lookup<Vec<u8>, u64> = Lookup::new(limits);
    lookup.offer(vec![0xFF; 8], u64::MAX, None);
    let mut asked = std::collections::VecDeque::new();
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let (message, tail) = tail.split_at(usize::from(u16::from_be_bytes([*a, *b])).min(tail.len()));
        rest = tail;
        while let Some(peer) = lookup.poll_ask() {
            asked.push_back(peer);
        }
        let Some(peer) = asked.pop_front() else { break };
        match codec::decode::<FindAnswer>(message, MAX_FIND_ANSWER_SIZE) {
            Ok(answer) => {
                // A peer's distance is its id's first 8 bytes; its range that of its first
                // address's first four bytes, read as IPv4.
                let closer = answer.closer.iter().map(|f| {
                    let ip = f.addrs.first().and_then(|a| <[u8; 4]>::try_from(a.get(..4)?).ok());
                    let mut distance = [0u8; 8];
                    let n = f.peer.len().min(8);
                    distance[..n].copy_from_slice(&f.peer[..n]);
                    (f.peer.to_vec(), u64::from_be_bytes(distance), ip.map(std::net::IpAddr::from))
                });
                lookup.on_answer(&peer, closer);
            }
            Err(_) => lookup.on_failure(&peer),
        }
        assert!(lookup.closest().count() <= limits.k);
        assert!(lookup.asked() <= limits.max_asked);
    }
}

/// NAT-traversal messages from the network, through the state machines that take them:
/// the first byte picks how the rest is read, as a binding message (a request, an
/// answer for the probe, a probe or acknowledgement for a puncher with one punch under
/// way), a punch signalling message, or a relay stream's header and frames. No answer is
/// ever larger than its request.
pub fn nat_messages(data: &[u8]) {
    use crate::nat::binding::{self, Binding, BINDING_LEN};
    use crate::nat::punch::{PunchMessage, MAX_PUNCH_MESSAGE};
    use crate::nat::relay::{frame_len, RelayHeader};
    use crate::nat::{NatProbe, ProbeConfig, PunchConfig, Puncher};
    let Some((&mode, rest)) = data.split_first() else { return };
    #[allow(clippy::disallowed_methods)] // a fuzz target's epoch
    let now = Instant::now();
    let from: std::net::SocketAddr = "192.0.2.9:4000".parse().expect("an address");
    match mode % 3 {
        0 => {
            let mut probe = NatProbe::new(ProbeConfig::default(), [1; 32]);
            probe.set_own(vec!["203.0.113.1:51820".parse().expect("an address")]);
            probe.add_reflectors(now, &[from]);
            probe.handle_timeout(now);
            let mut puncher: Puncher<u8> = Puncher::new(PunchConfig::default());
            puncher.start(1, [7; 12], &[from], now);
            for m in rest.chunks(BINDING_LEN) {
                match binding::parse(m) {
                    Some(Binding::Request(txid)) => {
                        assert!(binding::answer(&txid, from).len() <= m.len(), "no amplification");
                        probe.handle_request(from, "203.0.113.1:51820".parse().expect("an address"));
                    }
                    Some(Binding::Answer(txid, mapped)) => probe.handle_answer(&txid, mapped),
                    Some(Binding::Probe(token)) => {
                        puncher.handle_probe(from, &token);
                    }
                    Some(Binding::ProbeAck(token)) => {
                        puncher.handle_ack(from, &token);
                    }
                    None => {}
                }
                probe.handle_timeout(now);
                puncher.handle_timeout(now);
                while let Some((_, out)) = puncher.poll_transmit().or_else(|| probe.poll_transmit()) {
                    assert!(out.len() <= BINDING_LEN);
                }
            }
        }
        1 => {
            if let Ok(PunchMessage::Offer { candidates, .. } | PunchMessage::Answer { candidates }) =
                crate::codec::decode::<PunchMessage>(rest, MAX_PUNCH_MESSAGE)
            {
                let mut puncher: Puncher<u8> = Puncher::new(PunchConfig::default());
                puncher.prime([1; 12], &candidates);
                puncher.start(1, [1; 12], &candidates, now);
                puncher.handle_timeout(now);
            }
        }
        _ => {
            let Some(prefix) = rest.get(..3) else { return };
            let Ok(len) = RelayHeader::len_from_prefix([prefix[0], prefix[1], prefix[2]]) else { return };
            let Some(header) = rest.get(..len) else { return };
            if let Ok(h) = RelayHeader::parse(header) {
                assert_eq!(RelayHeader::parse(&h.encode()), Ok(h), "headers round-trip");
            }
            let mut frames = &rest[len..];
            while let Some(head) = frames.get(..2) {
                let Some(n) = frame_len([head[0], head[1]]) else { return };
                let Some(body) = frames.get(2..2 + n) else { return };
                frames = &frames[2 + body.len()..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounded::BoundedVec;
    use crate::codec;
    use crate::identity::{TunnelPublicKey, TunnelRecord};
    use crate::record::MAX_RECORD_SIZE;
    use std::path::PathBuf;

    /// Every target, by its name in `fuzz/` (and its corpus directory).
    type Target = (&'static str, fn(&[u8]));
    const TARGETS: [Target; 8] = [
        ("record_decode", record_decode),
        ("view_ingest", view_ingest),
        ("tunnel_record", tunnel_record),
        ("tunnel_wire", tunnel_wire),
        ("tunnel_responder", tunnel_responder),
        ("lease_messages", lease_messages),
        ("nat_messages", nat_messages),
        ("lookup_messages", lookup_messages),
    ];

    fn corpus_dir(target: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
    }

    fn seed_record(i: u8, seq: u64) -> NodeRecord {
        let k = key(i);
        let tunnel = TunnelRecord {
            peer_id: k.public().to_peer_id(),
            tunnel_pubkey: TunnelPublicKey::from_secret(&[i; 32]),
            udp_endpoints: BoundedVec::try_from_vec(vec!["127.0.0.1:51820".parse().unwrap()]).unwrap(),
            nat: Default::default(),
            issued_at: NOW,
        };
        NodeRecord {
            peer_id: k.public().to_peer_id(),
            namespace: namespace(),
            seq,
            timestamp: NOW,
            refresh_ms: 5000,
            gpus: Default::default(),
            cpu_cores: 4,
            memory_bytes: 1 << 30,
            labels: BoundedVec::new(),
            tunnel: SignedTunnelRecord::sign(&tunnel, &k).unwrap(),
            extensions: BoundedVec::new(),
        }
    }

    /// Two answers: four peers of one /24, closer than the first; then nobody.
    fn lookup_seed() -> Vec<u8> {
        use crate::bounded::BoundedBytes;
        use crate::diversity::lookup::{FindAnswer, FoundPeer, MAX_FIND_ANSWER_SIZE};
        let found = |i: u8| FoundPeer {
            peer: BoundedBytes::try_from_vec(vec![i; 8]).unwrap(),
            addrs: BoundedVec::try_from_vec(vec![BoundedBytes::try_from_vec(vec![203, 0, 114, i]).unwrap()])
                .unwrap(),
        };
        let mut out = Vec::new();
        for answer in [
            FindAnswer {
                closer: BoundedVec::try_from_vec((1..5).map(found).collect()).unwrap(),
                ..Default::default()
            },
            FindAnswer::default(),
        ] {
            let bytes = codec::encode(&answer, MAX_FIND_ANSWER_SIZE).unwrap();
            out.extend(u16::try_from(bytes.len()).unwrap().to_be_bytes());
            out.extend(bytes);
        }
        out
    }

    /// A relay stream: a `Connect` header, then two frames.
    fn nat_relay_seed() -> Vec<u8> {
        use crate::nat::relay::{frame_header, RelayHeader};
        let mut out = vec![2u8];
        out.extend(RelayHeader::Connect { to: author(2), detour: false }.encode());
        for d in [&[9u8; 32][..], &[8u8; 148][..]] {
            out.extend(frame_header(d.len()).unwrap());
            out.extend_from_slice(d);
        }
        out
    }

    /// Seeds: valid records (which the targets must accept) and a few broken ones.
    /// Two holders reserve, one renews and releases, one releases another's lease.
    fn lease_seed() -> Vec<u8> {
        use crate::place::wire::{GpuDemand, LeaseRequest};
        let reserve = |count| LeaseRequest::Reserve {
            task: crate::bounded::BoundedString::try_new("t").unwrap(),
            demand: GpuDemand {
                count,
                min_memory_mib: 0,
                min_compute_capability: None,
                models: crate::bounded::BoundedVec::new(),
            },
            ttl_ms: 60_000,
        };
        let mut out = Vec::new();
        for (holder, req) in [
            (0u8, reserve(2)),
            (1, reserve(3)),
            (1, reserve(2)),
            (0, LeaseRequest::Renew { lease: 1, ttl_ms: 1000 }),
            (1, LeaseRequest::Release { lease: 1 }),
            (0, LeaseRequest::Release { lease: 1 }),
        ] {
            let bytes = req.encode().unwrap();
            out.push(((bytes.len() as u8) << 1) | holder);
            out.extend_from_slice(&bytes);
        }
        out
    }

    fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
        let good = codec::encode(&seed_record(1, 7), MAX_RECORD_SIZE).unwrap();
        let mut view_msgs = Vec::new();
        for (i, seq) in [(1u8, 1u64), (2, 1), (1, 2), (3, 5)] {
            let bytes = codec::encode(&seed_record(i, seq), MAX_RECORD_SIZE).unwrap();
            // Messages longer than 63 bytes cannot be framed by one head byte; frame
            // the prefix, so the fuzzer has the structure to grow from.
            view_msgs.push(((63u8) << 2) | i);
            view_msgs.extend_from_slice(&bytes[..63]);
        }
        let seed = seed_record(1, 1);
        let (body, sig) = seed.tunnel.parts();
        let mut tunnel = body.to_vec();
        tunnel.extend_from_slice(sig);
        vec![
            ("record_decode", "valid".into(), good.clone()),
            ("record_decode", "truncated".into(), good[..good.len() / 2].to_vec()),
            (
                "record_decode",
                "length_bomb".into(),
                vec![1, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
            ),
            ("view_ingest", "four_authors".into(), view_msgs),
            ("tunnel_record", "valid".into(), tunnel),
            ("tunnel_wire", "initiation".into(), [&[1u8, 0, 0, 0][..], &[7; 144]].concat()),
            ("tunnel_wire", "response".into(), [&[2u8, 0, 0, 0][..], &[7; 88]].concat()),
            ("tunnel_wire", "cookie".into(), [&[3u8, 0, 0, 0][..], &[7; 60]].concat()),
            ("tunnel_wire", "keepalive".into(), [&[4u8, 0, 0, 0][..], &[7; 28]].concat()),
            // A genuine initiation, then a data packet, then 30 s, then a flipped initiation.
            (
                "tunnel_responder",
                "handshake_data_time".into(),
                vec![1, 2 | (8 << 2), 1, 2, 3, 4, 5, 6, 7, 8, 3 | (30 << 2), 1 | (2 << 2), 9, 0xFF],
            ),
            ("tunnel_responder", "raw".into(), [&[32u8 << 2][..], &[4, 0, 0, 0], &[0; 28]].concat()),
            ("lease_messages", "reserve_renew_release".into(), lease_seed()),
            ("nat_messages", "relay_header_frames".into(), nat_relay_seed()),
            ("lookup_messages", "sybil_answers".into(), lookup_seed()),
            (
                "nat_messages",
                "binding_request".into(),
                [&[0u8][..], &crate::nat::binding::request(&[5; 12])].concat(),
            ),
        ]
    }

    /// Inputs per second of each target, without sanitizers (what a soak's length is
    /// planned from): for one second each, corpus seeds with random bytes flipped, and
    /// random inputs up to libFuzzer's default 4 096 bytes.
    /// `cargo test --release -p swarm-mesh-core --lib fuzzing -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: prints each target's inputs per second"]
    fn inputs_per_second() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (target, run) in TARGETS {
            let seeds: Vec<Vec<u8>> = std::fs::read_dir(corpus_dir(target))
                .unwrap()
                .map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect();
            #[allow(clippy::disallowed_methods)]
            let start = Instant::now();
            let mut inputs = 0u64;
            while start.elapsed() < Duration::from_secs(1) {
                let mut input = if inputs.is_multiple_of(2) {
                    seeds[(next() as usize) % seeds.len()].clone()
                } else {
                    (0..next() % 4097).map(|_| next() as u8).collect()
                };
                for _ in 0..(next() % 8) {
                    if !input.is_empty() {
                        let at = (next() as usize) % input.len();
                        input[at] ^= next() as u8;
                    }
                }
                run(&input);
                inputs += 1;
            }
            println!("{target}: {:.0} inputs/s", inputs as f64 / start.elapsed().as_secs_f64());
        }
    }

    /// Replays every file of the checked-in corpus through its target. Set
    /// `SWARM_WRITE_SEEDS=1` to (re)write the seed files first.
    #[test]
    fn corpus_replays() {
        if std::env::var_os("SWARM_WRITE_SEEDS").is_some() {
            for (target, name, bytes) in seeds() {
                std::fs::create_dir_all(corpus_dir(target)).unwrap();
                std::fs::write(corpus_dir(target).join(format!("seed-{name}")), bytes).unwrap();
            }
        }
        let good = codec::encode(&seed_record(1, 7), MAX_RECORD_SIZE).unwrap();
        assert!(NodeRecord::decode_verified(&good, &author(1), &namespace(), NOW, &RecordPolicy::default())
            .is_ok());
        let mut replayed = 0;
        for (target, run) in TARGETS {
            let dir = corpus_dir(target);
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                run(&bytes);
                replayed += 1;
            }
        }
        assert!(replayed >= 5, "the corpus is checked in ({replayed} files)");
    }
}
