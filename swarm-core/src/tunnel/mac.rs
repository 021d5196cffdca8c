//! WireGuard's mac1 and mac2 (whitepaper §5.4.4): keyed BLAKE2s with a 16-byte output.
//!
//! mac1 = MAC(HASH("mac1----" ‖ receiver's static public key), message up to mac1). It is
//! checked before any Diffie-Hellman work, so a flood of forged handshakes costs a hash
//! each, not a scalar multiplication. mac2 = MAC(cookie, message up to mac2), required
//! only under load.

use blake2::digest::consts::U16;
use blake2::digest::{Digest, KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac};

/// Length of mac1, mac2 and a cookie.
pub const MAC_LEN: usize = 16;
const LABEL_MAC1: &[u8; 8] = b"mac1----";
const LABEL_COOKIE: &[u8; 8] = b"cookie--";

/// HASH(label ‖ static public key).
fn labelled_key(label: &[u8; 8], static_public: &[u8; 32]) -> [u8; 32] {
    Blake2s256::new().chain_update(label).chain_update(static_public).finalize().into()
}

/// The key of mac1 for messages sent *to* the owner of `static_public`.
pub fn mac1_key(static_public: &[u8; 32]) -> [u8; 32] {
    labelled_key(LABEL_MAC1, static_public)
}

/// The key that seals cookie replies sent by the owner of `static_public`.
pub fn cookie_key(static_public: &[u8; 32]) -> [u8; 32] {
    labelled_key(LABEL_COOKIE, static_public)
}

fn keyed(key: &[u8]) -> Blake2sMac<U16> {
    // Keys here are 16 or 32 bytes; BLAKE2s takes keys of 1 to 32 bytes.
    <Blake2sMac<U16> as KeyInit>::new_from_slice(key).expect("BLAKE2s key of 1..=32 bytes")
}

/// MAC(key, message): keyed BLAKE2s, 16 bytes.
pub fn mac(key: &[u8], message: &[u8]) -> [u8; MAC_LEN] {
    let mut m = keyed(key);
    m.update(message);
    m.finalize().into_bytes().into()
}

/// Whether `tag` is MAC(key, message), in constant time.
pub fn verify(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
    let mut m = keyed(key);
    m.update(message);
    m.verify_slice(tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake2s_is_the_rfc_7693_function() {
        // RFC 7693, Appendix B: BLAKE2s-256("abc").
        let h: [u8; 32] = Blake2s256::digest(b"abc").into();
        assert_eq!(h[..4], [0x50, 0x8C, 0x5E, 0x8C]);
        assert_eq!(h[28..], [0x86, 0x67, 0x59, 0x82]);
    }

    #[test]
    fn mac1_round_trips_and_catches_every_flipped_bit() {
        let key = mac1_key(&[9; 32]);
        let msg = [0x42u8; 116];
        let tag = mac(&key, &msg);
        assert!(verify(&key, &msg, &tag));
        for i in 0..msg.len() {
            let mut m = msg;
            m[i] ^= 1;
            assert!(!verify(&key, &m, &tag), "byte {i}");
        }
        let mut t = tag;
        t[15] ^= 0x80;
        assert!(!verify(&key, &msg, &t));
        assert!(!verify(&mac1_key(&[8; 32]), &msg, &tag), "another receiver's key");
        assert!(!verify(&key, &msg, &tag[..15]), "a short tag");
        assert_ne!(mac1_key(&[9; 32]), cookie_key(&[9; 32]));
    }
}
