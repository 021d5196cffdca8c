//! The binding messages, 48 bytes each way (so an answer never amplifies):
//!
//! ```text
//! 0      1..4   4        5        6..8   8..20          20       21..23  23..39     39..48
//! 0xf5   "SWB"  version  kind     zero   transaction    family   port    address    zero
//!                        1: request      (12 bytes,     4 | 6    (BE)    (v4: 4 bytes)
//!                        2: answer       or a punch     (answer only)
//!                        3: punch probe  token)
//!                        4: probe ack
//! ```
//!
//! WireGuard's messages start with 1 to 4, so the first byte tells them apart.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first byte of a binding message.
pub const BINDING_TYPE: u8 = 0xf5;
/// The length of either message.
pub const BINDING_LEN: usize = 48;
const MAGIC: [u8; 3] = *b"SWB";
const VERSION: u8 = 1;
const REQUEST: u8 = 1;
const ANSWER: u8 = 2;
const PROBE: u8 = 3;
const PROBE_ACK: u8 = 4;

/// A transaction id: the answer names the request it answers.
pub type TransactionId = [u8; 12];

/// A parsed binding message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// "Where do you see me?"
    Request(TransactionId),
    /// "At `mapped`."
    Answer(TransactionId, SocketAddr),
    /// A hole-punching probe carrying the token both sides agreed on.
    Probe(TransactionId),
    /// "Your probe with this token came through."
    ProbeAck(TransactionId),
}

/// Whether `datagram` is a binding message (and not WireGuard's).
pub fn is_binding(datagram: &[u8]) -> bool {
    datagram.first() == Some(&BINDING_TYPE)
}

fn header(kind: u8, txid: &TransactionId) -> [u8; BINDING_LEN] {
    let mut m = [0u8; BINDING_LEN];
    m[0] = BINDING_TYPE;
    m[1..4].copy_from_slice(&MAGIC);
    m[4] = VERSION;
    m[5] = kind;
    m[8..20].copy_from_slice(txid);
    m
}

/// A request.
pub fn request(txid: &TransactionId) -> [u8; BINDING_LEN] {
    header(REQUEST, txid)
}

/// A hole-punching probe.
pub fn probe(token: &TransactionId) -> [u8; BINDING_LEN] {
    header(PROBE, token)
}

/// The acknowledgement of a probe.
pub fn probe_ack(token: &TransactionId) -> [u8; BINDING_LEN] {
    header(PROBE_ACK, token)
}

/// The answer to a request that came from `mapped`.
pub fn answer(txid: &TransactionId, mapped: SocketAddr) -> [u8; BINDING_LEN] {
    let mut m = header(ANSWER, txid);
    m[21..23].copy_from_slice(&mapped.port().to_be_bytes());
    match mapped.ip() {
        IpAddr::V4(v4) => {
            m[20] = 4;
            m[23..27].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            m[20] = 6;
            m[23..39].copy_from_slice(&v6.octets());
        }
    }
    m
}

/// Reads a binding message; `None` for anything else (wrong length, magic, version or
/// kind, an answer with a bad family).
pub fn parse(m: &[u8]) -> Option<Binding> {
    if m.len() != BINDING_LEN || m[0] != BINDING_TYPE || m[1..4] != MAGIC || m[4] != VERSION {
        return None;
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&m[8..20]);
    match m[5] {
        REQUEST => Some(Binding::Request(txid)),
        PROBE => Some(Binding::Probe(txid)),
        PROBE_ACK => Some(Binding::ProbeAck(txid)),
        ANSWER => {
            let port = u16::from_be_bytes([m[21], m[22]]);
            let ip = match m[20] {
                4 => IpAddr::V4(Ipv4Addr::new(m[23], m[24], m[25], m[26])),
                6 => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(&m[23..39]);
                    IpAddr::V6(Ipv6Addr::from(o))
                }
                _ => return None,
            };
            Some(Binding::Answer(txid, SocketAddr::new(ip, port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_garbage() {
        let t = [7u8; 12];
        assert_eq!(parse(&request(&t)), Some(Binding::Request(t)));
        assert_eq!(parse(&probe(&t)), Some(Binding::Probe(t)));
        assert_eq!(parse(&probe_ack(&t)), Some(Binding::ProbeAck(t)));
        for a in ["198.51.100.2:40001", "[2001:db8::5]:9"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(parse(&answer(&t, a)), Some(Binding::Answer(t, a)));
        }
        let mut bad = request(&t);
        bad[4] = 9;
        assert_eq!(parse(&bad), None);
        assert_eq!(parse(&request(&t)[..40]), None);
        let mut fam = answer(&t, "1.2.3.4:5".parse().unwrap());
        fam[20] = 5;
        assert_eq!(parse(&fam), None);
        // WireGuard's messages are never taken for binding messages.
        for wg_type in 1u8..=4 {
            assert!(!is_binding(&[wg_type, 0, 0, 0]));
        }
    }
}
