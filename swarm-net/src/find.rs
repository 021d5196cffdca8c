//! The look-up protocol (`/swarm/find/1`, libp2p request-response; the look-up itself
//! and the messages are `swarm_core::diversity::lookup`): a node asks a peer for the
//! peers its routing table holds closest to a key and the providers of that key it
//! stores, and may announce itself as a provider. The node's namespace discovery walks
//! with it instead of Kademlia's own queries, whose candidates no rule can bound
//! (rust-libp2p has no hook): here at most 3 of one address range are among a look-up's
//! closest, so sybils from one range cannot eclipse it.

use std::time::Duration;

use libp2p::request_response;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use swarm_core::bounded::{BoundedBytes, BoundedVec};
use swarm_core::diversity::lookup::{
    FindAnswer, FindRequest, FoundPeer, MAX_ADDRS, MAX_FIND_ANSWER_SIZE, MAX_FIND_REQUEST_SIZE,
};

use crate::framed::FramedCodec;

/// The protocol's name (one for every namespace, as Kademlia's).
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/swarm/find/1");

/// How long a peer has to answer.
pub(crate) const FIND_TIMEOUT: Duration = Duration::from_secs(5);

/// The protocol's messages, framed (`crate::framed`).
pub(crate) type FindCodec = FramedCodec<FindRequest, FindAnswer>;

/// A codec with the protocol's caps and a fresh `malformed` counter.
pub(crate) fn codec() -> FindCodec {
    FramedCodec::new(MAX_FIND_REQUEST_SIZE, MAX_FIND_ANSWER_SIZE)
}

pub(crate) type FindBehaviour = request_response::Behaviour<FindCodec>;

pub(crate) fn behaviour(codec: FindCodec) -> FindBehaviour {
    request_response::Behaviour::with_codec(
        codec,
        [(PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(FIND_TIMEOUT)
            .with_max_concurrent_streams(16),
    )
}

/// `addrs` as the wire carries them: the first [`MAX_ADDRS`] that fit.
pub(crate) fn wire_addrs<'a>(
    addrs: impl IntoIterator<Item = &'a Multiaddr>,
) -> BoundedVec<BoundedBytes<{ swarm_core::diversity::lookup::MAX_ADDR_LEN }>, MAX_ADDRS> {
    let bytes: Vec<_> = addrs
        .into_iter()
        .filter_map(|a| BoundedBytes::try_from_vec(a.to_vec()).ok())
        .take(MAX_ADDRS)
        .collect();
    BoundedVec::try_from_vec(bytes).unwrap_or_default()
}

/// `peer` at `addrs`, as an answer names it.
pub(crate) fn found_peer<'a>(
    peer: &PeerId,
    addrs: impl IntoIterator<Item = &'a Multiaddr>,
) -> Option<FoundPeer> {
    Some(FoundPeer { peer: BoundedBytes::try_from_vec(peer.to_bytes()).ok()?, addrs: wire_addrs(addrs) })
}

/// A peer an answer names, if its id parses; its addresses that parse.
pub(crate) fn read_found(found: &FoundPeer) -> Option<(PeerId, Vec<Multiaddr>)> {
    let peer = PeerId::from_bytes(&found.peer).ok()?;
    Some((peer, read_addrs(&found.addrs)))
}

/// The addresses of a message that parse.
pub(crate) fn read_addrs(
    addrs: &[BoundedBytes<{ swarm_core::diversity::lookup::MAX_ADDR_LEN }>],
) -> Vec<Multiaddr> {
    addrs.iter().filter_map(|a| Multiaddr::try_from(a.to_vec()).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use request_response::Codec as _;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn peers_round_trip_and_junk_is_counted() {
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/11.0.0.1/tcp/4001".parse().unwrap();
        let found = found_peer(&peer, [&addr]).unwrap();
        assert_eq!(read_found(&found), Some((peer, vec![addr.clone()])));
        let mut codec = codec();
        let answer =
            FindAnswer { closer: BoundedVec::try_from_vec(vec![found]).unwrap(), ..FindAnswer::default() };
        let mut buf = Vec::new();
        codec
            .write_response(&PROTOCOL, &mut futures::io::Cursor::new(&mut buf), answer.clone())
            .await
            .unwrap();
        assert_eq!(
            codec.read_response(&PROTOCOL, &mut futures::io::Cursor::new(&buf)).await.unwrap(),
            answer
        );
        // A peer id or address that does not parse is left out, not an error.
        let junk = FoundPeer {
            peer: BoundedBytes::try_from_slice(&[1, 2, 3]).unwrap(),
            addrs: BoundedVec::try_from_vec(vec![BoundedBytes::try_from_slice(&[0xFF]).unwrap()]).unwrap(),
        };
        assert_eq!(read_found(&junk), None);
        assert!(read_addrs(&junk.addrs).is_empty());
        let mut bad = 4u32.to_be_bytes().to_vec();
        bad.extend_from_slice(&[0xFF; 4]);
        assert!(codec.read_request(&PROTOCOL, &mut futures::io::Cursor::new(&bad)).await.is_err());
        assert_eq!(codec.malformed.load(Ordering::Relaxed), 1);
    }
}
