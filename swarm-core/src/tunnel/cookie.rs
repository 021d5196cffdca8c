//! Cookies (whitepaper §5.4.7): what a responder under load asks of initiators before it
//! spends Diffie-Hellman work on them.
//!
//! A [`CookieChecker`] belongs to the local node: it verifies mac1 of every handshake
//! message, and under load mac2, which only a sender that received a cookie for its
//! source address can compute. The cookie is `MAC(secret, source address)`, the secret
//! random and renewed every two minutes, so nothing per sender is stored. The cookie
//! travels sealed with XChaCha20-Poly1305 under a key derived from the responder's
//! public key, with the mac1 of the message it answers as associated data.
//!
//! A [`CookieJar`] belongs to one remote peer: it keeps the last mac1 we sent it and the
//! cookie it gave us, and fills in mac2 of our next handshake messages with it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use rand::rngs::StdRng;
use rand::Rng;
use zeroize::Zeroizing;

use super::mac::{cookie_key, mac, mac1_key, verify, MAC_LEN};
use super::wire::{CookieReply, COOKIE_REPLY_LEN, TYPE_COOKIE_REPLY};

/// How long a cookie secret lives, and how long a received cookie is used.
pub const COOKIE_SECRET_MAX_AGE: Duration = Duration::from_secs(120);
/// Margin for a cookie in flight: a received cookie is used for this much less.
const COOKIE_LATENCY: Duration = Duration::from_secs(5);

/// The responder's side: mac1 and mac2 checks and cookie replies.
#[derive(Clone)]
pub struct CookieChecker {
    mac1_key: [u8; 32],
    reply_key: Zeroizing<[u8; 32]>,
    secret: Zeroizing<[u8; 32]>,
    secret_born: Option<Instant>,
}

impl core::fmt::Debug for CookieChecker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CookieChecker").field("secret_born", &self.secret_born).finish_non_exhaustive()
    }
}

fn address_bytes(src: SocketAddr, out: &mut [u8; 18]) -> &[u8] {
    let port = src.port().to_be_bytes();
    match src.ip() {
        IpAddr::V4(ip) => {
            out[..4].copy_from_slice(&ip.octets());
            out[4..6].copy_from_slice(&port);
            &out[..6]
        }
        IpAddr::V6(ip) => {
            out[..16].copy_from_slice(&ip.octets());
            out[16..].copy_from_slice(&port);
            &out[..]
        }
    }
}

impl CookieChecker {
    /// The checker of the node whose static public key is `local_public`.
    pub fn new(local_public: &[u8; 32]) -> Self {
        Self {
            mac1_key: mac1_key(local_public),
            reply_key: Zeroizing::new(cookie_key(local_public)),
            secret: Zeroizing::new([0; 32]),
            secret_born: None,
        }
    }

    /// Whether `tag` is mac1 of `input` for us.
    pub fn check_mac1(&self, input: &[u8], tag: &[u8]) -> bool {
        verify(&self.mac1_key, input, tag)
    }

    fn cookie(&mut self, now: Instant, rng: &mut StdRng, src: SocketAddr) -> [u8; MAC_LEN] {
        let fresh =
            self.secret_born.is_some_and(|born| now.saturating_duration_since(born) < COOKIE_SECRET_MAX_AGE);
        if !fresh {
            rng.fill_bytes(&mut self.secret[..]);
            self.secret_born = Some(now);
        }
        let mut buf = [0u8; 18];
        mac(&self.secret[..], address_bytes(src, &mut buf))
    }

    /// Whether `tag` is mac2 of `input` made with the cookie of `src`.
    pub fn check_mac2(
        &mut self,
        now: Instant,
        rng: &mut StdRng,
        src: SocketAddr,
        input: &[u8],
        tag: &[u8],
    ) -> bool {
        let cookie = self.cookie(now, rng, src);
        verify(&cookie, input, tag)
    }

    /// Writes a cookie reply for `src` answering the message with sender index
    /// `receiver` and mac1 `answered_mac1`.
    pub fn seal_reply(
        &mut self,
        now: Instant,
        rng: &mut StdRng,
        src: SocketAddr,
        receiver: u32,
        answered_mac1: &[u8],
        out: &mut [u8; COOKIE_REPLY_LEN],
    ) {
        let cookie = self.cookie(now, rng, src);
        out[..4].copy_from_slice(&[TYPE_COOKIE_REPLY, 0, 0, 0]);
        out[4..8].copy_from_slice(&receiver.to_le_bytes());
        rng.fill_bytes(&mut out[8..32]);
        let nonce = *XNonce::from_slice(&out[8..32]);
        out[32..48].copy_from_slice(&cookie);
        let cipher = XChaCha20Poly1305::new(self.reply_key[..].into());
        // Sealing 16 bytes into a fixed buffer cannot fail.
        if let Ok(tag) = cipher.encrypt_in_place_detached(&nonce, answered_mac1, &mut out[32..48]) {
            out[48..64].copy_from_slice(&tag);
        }
    }
}

/// The initiator's side, per remote peer: the cookie it gave us and our last mac1.
#[derive(Default, Clone)]
pub struct CookieJar {
    cookie: Option<(Zeroizing<[u8; MAC_LEN]>, Instant)>,
    last_mac1: Option<[u8; MAC_LEN]>,
}

impl core::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CookieJar").field("has_cookie", &self.cookie.is_some()).finish_non_exhaustive()
    }
}

impl CookieJar {
    /// Fills in mac1 (keyed for the peer) and mac2 (with a live cookie, else zero) at the
    /// end of a handshake message of which `msg[..msg.len() - 32]` is already written.
    pub fn stamp(&mut self, now: Instant, peer_mac1_key: &[u8; 32], msg: &mut [u8]) {
        let mac1_at = msg.len() - 2 * MAC_LEN;
        let mac2_at = msg.len() - MAC_LEN;
        let m1 = mac(peer_mac1_key, &msg[..mac1_at]);
        msg[mac1_at..mac2_at].copy_from_slice(&m1);
        self.last_mac1 = Some(m1);
        let live = self.cookie.as_ref().filter(|(_, at)| {
            now.saturating_duration_since(*at) < COOKIE_SECRET_MAX_AGE.saturating_sub(COOKIE_LATENCY)
        });
        let m2 = match live {
            Some((cookie, _)) => mac(&cookie[..], &msg[..mac2_at]),
            None => [0; MAC_LEN],
        };
        msg[mac2_at..].copy_from_slice(&m2);
    }

    /// Opens a cookie reply from the peer whose cookie key is `peer_cookie_key`; keeps
    /// the cookie when it authenticates against the last mac1 we sent.
    pub fn open_reply(&mut self, now: Instant, peer_cookie_key: &[u8; 32], reply: CookieReply<'_>) -> bool {
        let Some(aad) = self.last_mac1 else { return false };
        let nonce = XNonce::from_slice(reply.nonce());
        let sealed = reply.sealed_cookie();
        let mut cookie = Zeroizing::new([0u8; MAC_LEN]);
        cookie.copy_from_slice(&sealed[..MAC_LEN]);
        let cipher = XChaCha20Poly1305::new(peer_cookie_key.into());
        let tag = chacha20poly1305::Tag::from_slice(&sealed[MAC_LEN..]);
        if cipher.decrypt_in_place_detached(nonce, &aad, &mut cookie[..], tag).is_err() {
            return false;
        }
        self.cookie = Some((cookie, now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::wire::Message;
    use rand::SeedableRng;

    #[test]
    fn a_cookie_reply_gives_the_initiator_a_working_mac2() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut rng = StdRng::from_seed([7; 32]);
        let responder_public = [3u8; 32];
        let mut checker = CookieChecker::new(&responder_public);
        let mut jar = CookieJar::default();
        let src: SocketAddr = "192.0.2.1:51820".parse().unwrap();

        let mut msg = [1u8; 148];
        jar.stamp(t0, &mac1_key(&responder_public), &mut msg);
        assert!(checker.check_mac1(&msg[..116], &msg[116..132]));
        assert_eq!(msg[132..], [0; 16], "no cookie yet: mac2 is zero");
        assert!(!checker.check_mac2(t0, &mut rng, src, &msg[..132], &msg[132..]));

        let mut reply = [0u8; 64];
        checker.seal_reply(t0, &mut rng, src, 77, &msg[116..132], &mut reply);
        let Ok(Message::CookieReply(r)) = Message::parse(&reply) else { panic!("a cookie reply") };
        assert_eq!(r.receiver(), 77);
        assert!(!jar.open_reply(t0, &cookie_key(&[4; 32]), r), "another responder's key");
        assert!(jar.open_reply(t0, &cookie_key(&responder_public), r));

        jar.stamp(t0, &mac1_key(&responder_public), &mut msg);
        assert!(checker.check_mac2(t0, &mut rng, src, &msg[..132], &msg[132..]));
        let other: SocketAddr = "192.0.2.2:51820".parse().unwrap();
        assert!(!checker.check_mac2(t0, &mut rng, other, &msg[..132], &msg[132..]), "bound to the address");

        // The secret rotates: an old cookie stops working, and the jar stops using it.
        let later = t0 + COOKIE_SECRET_MAX_AGE + Duration::from_secs(1);
        assert!(!checker.check_mac2(later, &mut rng, src, &msg[..132], &msg[132..]));
        jar.stamp(later, &mac1_key(&responder_public), &mut msg);
        assert_eq!(msg[132..], [0; 16]);
    }

    #[test]
    fn a_tampered_reply_is_refused() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut rng = StdRng::from_seed([1; 32]);
        let public = [5u8; 32];
        let mut checker = CookieChecker::new(&public);
        let mut jar = CookieJar::default();
        let mut msg = [2u8; 92];
        jar.stamp(t0, &mac1_key(&public), &mut msg);
        let src: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        let mut reply = [0u8; 64];
        checker.seal_reply(t0, &mut rng, src, 1, &msg[60..76], &mut reply);
        for i in 8..64 {
            let mut bad = reply;
            bad[i] ^= 1;
            let Ok(Message::CookieReply(r)) = Message::parse(&bad) else { panic!() };
            assert!(!jar.open_reply(t0, &cookie_key(&public), r), "byte {i}");
        }
    }
}
