//! WireGuard v1 messages as checked views over caller-owned bytes (smoltcp style):
//! `Message::parse(bytes)` checks type and length once, then field accessors read at named
//! offsets without further checks. Nothing here allocates.
//!
//! | type | message          | size                          |
//! |------|------------------|-------------------------------|
//! | 1    | handshake init   | 148                           |
//! | 2    | handshake resp   | 92                            |
//! | 3    | cookie reply     | 64                            |
//! | 4    | transport data   | 16 + payload + 16 (≥ 32)      |
//!
//! The 4-byte header is `[type, 0, 0, 0]`: peers read it as one little-endian u32, so
//! nonzero reserved bytes make a different (unknown) type.

/// Message type of a handshake initiation.
pub const TYPE_INITIATION: u8 = 1;
/// Message type of a handshake response.
pub const TYPE_RESPONSE: u8 = 2;
/// Message type of a cookie reply.
pub const TYPE_COOKIE_REPLY: u8 = 3;
/// Message type of transport data.
pub const TYPE_TRANSPORT: u8 = 4;

/// Size of a handshake initiation.
pub const INITIATION_LEN: usize = 148;
/// Size of a handshake response.
pub const RESPONSE_LEN: usize = 92;
/// Size of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 64;
/// Size of a transport message's header (type, receiver index, counter).
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Size of the AEAD tag.
pub const TAG_LEN: usize = 16;
/// Smallest transport message: a keepalive (empty payload).
pub const TRANSPORT_MIN_LEN: usize = TRANSPORT_HEADER_LEN + TAG_LEN;

mod field {
    use core::ops::Range;
    pub const SENDER: Range<usize> = 4..8;
    // Initiation.
    pub const INIT_NOISE: Range<usize> = 8..116;
    pub const INIT_MAC1: Range<usize> = 116..132;
    pub const INIT_MAC2: Range<usize> = 132..148;
    // Response.
    pub const RESP_RECEIVER: Range<usize> = 8..12;
    pub const RESP_NOISE: Range<usize> = 12..60;
    pub const RESP_MAC1: Range<usize> = 60..76;
    pub const RESP_MAC2: Range<usize> = 76..92;
    // Cookie reply.
    pub const COOKIE_RECEIVER: Range<usize> = 4..8;
    pub const COOKIE_NONCE: Range<usize> = 8..32;
    pub const COOKIE_SEALED: Range<usize> = 32..64;
    // Transport.
    pub const DATA_RECEIVER: Range<usize> = 4..8;
    pub const DATA_COUNTER: Range<usize> = 8..16;
}

/// Why bytes are not a WireGuard message. Cheap to copy: it is counted per dropped
/// packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than any message.
    #[error("datagram of {0} bytes is too short")]
    TooShort(usize),
    /// The header is not `[1..=4, 0, 0, 0]`.
    #[error("unknown message type")]
    UnknownType,
    /// The length does not fit the message type.
    #[error("message type {kind} cannot be {len} bytes long")]
    BadLength {
        /// The message type.
        kind: u8,
        /// The length.
        len: usize,
    },
}

/// One parsed datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// Type 1.
    Initiation(Initiation<'a>),
    /// Type 2.
    Response(Response<'a>),
    /// Type 3.
    CookieReply(CookieReply<'a>),
    /// Type 4.
    Transport(Transport<'a>),
}

fn u32_at(b: &[u8], r: core::ops::Range<usize>) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[r]);
    u32::from_le_bytes(a)
}

impl<'a> Message<'a> {
    /// Checks type and length; the views then read fields without further checks.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let Some(header) = bytes.first_chunk::<4>() else {
            return Err(WireError::TooShort(bytes.len()));
        };
        let kind = match header {
            [k @ 1..=4, 0, 0, 0] => *k,
            _ => return Err(WireError::UnknownType),
        };
        let len = bytes.len();
        let ok = match kind {
            TYPE_INITIATION => len == INITIATION_LEN,
            TYPE_RESPONSE => len == RESPONSE_LEN,
            TYPE_COOKIE_REPLY => len == COOKIE_REPLY_LEN,
            // We pad to 16; other implementations (boringtun) do not, and need not.
            _ => len >= TRANSPORT_MIN_LEN,
        };
        if !ok {
            return Err(WireError::BadLength { kind, len });
        }
        Ok(match kind {
            TYPE_INITIATION => Message::Initiation(Initiation(bytes)),
            TYPE_RESPONSE => Message::Response(Response(bytes)),
            TYPE_COOKIE_REPLY => Message::CookieReply(CookieReply(bytes)),
            _ => Message::Transport(Transport(bytes)),
        })
    }
}

/// A handshake initiation (148 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Initiation<'a>(&'a [u8]);

impl<'a> Initiation<'a> {
    /// The whole message.
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
    /// The initiator's session index.
    pub fn sender(&self) -> u32 {
        u32_at(self.0, field::SENDER)
    }
    /// The Noise part: ephemeral, encrypted static, encrypted timestamp (108 bytes).
    pub fn noise(&self) -> &'a [u8] {
        &self.0[field::INIT_NOISE]
    }
    /// The bytes mac1 covers.
    pub fn mac1_input(&self) -> &'a [u8] {
        &self.0[..field::INIT_MAC1.start]
    }
    /// mac1.
    pub fn mac1(&self) -> &'a [u8] {
        &self.0[field::INIT_MAC1]
    }
    /// The bytes mac2 covers.
    pub fn mac2_input(&self) -> &'a [u8] {
        &self.0[..field::INIT_MAC2.start]
    }
    /// mac2 (zero without a cookie).
    pub fn mac2(&self) -> &'a [u8] {
        &self.0[field::INIT_MAC2]
    }
}

/// A handshake response (92 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a>(&'a [u8]);

impl<'a> Response<'a> {
    /// The whole message.
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
    /// The responder's session index.
    pub fn sender(&self) -> u32 {
        u32_at(self.0, field::SENDER)
    }
    /// The initiator's session index, echoed.
    pub fn receiver(&self) -> u32 {
        u32_at(self.0, field::RESP_RECEIVER)
    }
    /// The Noise part: ephemeral and encrypted empty payload (48 bytes).
    pub fn noise(&self) -> &'a [u8] {
        &self.0[field::RESP_NOISE]
    }
    /// The bytes mac1 covers.
    pub fn mac1_input(&self) -> &'a [u8] {
        &self.0[..field::RESP_MAC1.start]
    }
    /// mac1.
    pub fn mac1(&self) -> &'a [u8] {
        &self.0[field::RESP_MAC1]
    }
    /// The bytes mac2 covers.
    pub fn mac2_input(&self) -> &'a [u8] {
        &self.0[..field::RESP_MAC2.start]
    }
    /// mac2.
    pub fn mac2(&self) -> &'a [u8] {
        &self.0[field::RESP_MAC2]
    }
}

/// A cookie reply (64 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieReply<'a>(&'a [u8]);

impl<'a> CookieReply<'a> {
    /// The whole message.
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
    /// The index of the handshake message this answers.
    pub fn receiver(&self) -> u32 {
        u32_at(self.0, field::COOKIE_RECEIVER)
    }
    /// The 24-byte XChaCha20 nonce.
    pub fn nonce(&self) -> &'a [u8] {
        &self.0[field::COOKIE_NONCE]
    }
    /// The sealed cookie (16 bytes and a 16-byte tag).
    pub fn sealed_cookie(&self) -> &'a [u8] {
        &self.0[field::COOKIE_SEALED]
    }
}

/// Transport data: header, then ciphertext and tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport<'a>(&'a [u8]);

impl<'a> Transport<'a> {
    /// The whole message.
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
    /// The receiver's session index.
    pub fn receiver(&self) -> u32 {
        u32_at(self.0, field::DATA_RECEIVER)
    }
    /// The 64-bit counter (the AEAD nonce).
    pub fn counter(&self) -> u64 {
        let mut a = [0; 8];
        a.copy_from_slice(&self.0[field::DATA_COUNTER]);
        u64::from_le_bytes(a)
    }
    /// Ciphertext and tag.
    pub fn sealed(&self) -> &'a [u8] {
        &self.0[TRANSPORT_HEADER_LEN..]
    }
}

/// Writes a transport header into `out[..16]`; `out` must hold at least 16 bytes.
pub fn emit_transport_header(out: &mut [u8], receiver: u32, counter: u64) -> Result<(), WireError> {
    let Some(header) = out.first_chunk_mut::<TRANSPORT_HEADER_LEN>() else {
        return Err(WireError::TooShort(out.len()));
    };
    header[..4].copy_from_slice(&[TYPE_TRANSPORT, 0, 0, 0]);
    header[field::DATA_RECEIVER].copy_from_slice(&receiver.to_le_bytes());
    header[field::DATA_COUNTER].copy_from_slice(&counter.to_le_bytes());
    Ok(())
}

/// The payload length after WireGuard's padding to a multiple of 16.
pub fn padded_len(payload: usize) -> usize {
    payload.div_ceil(16) * 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_of_every_type_is_checked() {
        for kind in 0u8..=6 {
            for len in 0..=200usize {
                let mut b = vec![0u8; len];
                if len >= 1 {
                    b[0] = kind;
                }
                let r = Message::parse(&b);
                let expected_ok = match kind {
                    1 => len == 148,
                    2 => len == 92,
                    3 => len == 64,
                    4 => len >= 32,
                    _ => false,
                };
                assert_eq!(r.is_ok(), expected_ok, "type {kind} len {len}: {r:?}");
                if len < 4 {
                    assert_eq!(r, Err(WireError::TooShort(len)));
                }
            }
        }
    }

    #[test]
    fn reserved_bytes_must_be_zero() {
        let mut b = [0u8; 148];
        b[0] = 1;
        assert!(Message::parse(&b).is_ok());
        for i in 1..4 {
            let mut c = b;
            c[i] = 1;
            assert_eq!(Message::parse(&c), Err(WireError::UnknownType));
        }
    }

    #[test]
    fn fields_are_read_at_their_offsets() {
        let mut b = [0u8; 92];
        b[0] = 2;
        b[4..8].copy_from_slice(&0x0102_0304u32.to_le_bytes());
        b[8..12].copy_from_slice(&0xAABB_CCDDu32.to_le_bytes());
        b[60] = 0xEE;
        let Ok(Message::Response(r)) = Message::parse(&b) else { panic!("a response") };
        assert_eq!(r.sender(), 0x0102_0304);
        assert_eq!(r.receiver(), 0xAABB_CCDD);
        assert_eq!(r.noise().len(), 48);
        assert_eq!(r.mac1()[0], 0xEE);
        assert_eq!(r.mac1_input().len(), 60);
        assert_eq!(r.mac2_input().len(), 76);

        let mut t = [0u8; 48];
        emit_transport_header(&mut t, 7, 0x1122_3344_5566_7788).unwrap();
        let Ok(Message::Transport(d)) = Message::parse(&t) else { panic!("transport") };
        assert_eq!((d.receiver(), d.counter(), d.sealed().len()), (7, 0x1122_3344_5566_7788, 32));
        assert_eq!(emit_transport_header(&mut [0u8; 15], 1, 1), Err(WireError::TooShort(15)));

        let mut i = [0u8; 148];
        i[0] = 1;
        i[4] = 9;
        let Ok(Message::Initiation(m)) = Message::parse(&i) else { panic!("initiation") };
        assert_eq!(
            (m.sender(), m.noise().len(), m.mac1_input().len(), m.mac2_input().len()),
            (9, 108, 116, 132)
        );
        let mut c = [0u8; 64];
        c[0] = 3;
        let Ok(Message::CookieReply(k)) = Message::parse(&c) else { panic!("cookie") };
        assert_eq!((k.nonce().len(), k.sealed_cookie().len()), (24, 32));
    }

    #[test]
    fn padding() {
        assert_eq!([0, 1, 15, 16, 17, 1420].map(padded_len), [0, 16, 16, 16, 32, 1424]);
    }
}
