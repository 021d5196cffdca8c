//! The Noise part of the handshake, through snow: `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`
//! with WireGuard's identifier as the prologue and the pre-shared key (zero when the
//! swarm has none) mixed in after the second message.
//!
//! snow asks its resolver for a random number generator at every build; ours hands out a
//! ChaCha generator seeded by the caller, so the core never touches OS randomness and a
//! seeded run is reproducible.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState};
use zeroize::Zeroizing;

/// WireGuard's identifier, the Noise prologue.
pub(crate) const PROLOGUE: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
const PATTERN: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";

struct SeededRandom(StdRng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// X25519 and BLAKE2s from snow's default resolver, ChaChaPoly from ring, randomness
/// from a seed. (Fuzz builds swap X25519 for [`fuzz_dh`].)
struct Resolver {
    seed: [u8; 32],
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(StdRng::from_seed(self.seed))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        #[cfg(fuzzing)]
        if *choice == DHChoice::Curve25519 {
            return Some(Box::new(fuzz_dh::FuzzDh::default()));
        }
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        RingResolver.resolve_cipher(choice).or_else(|| DefaultResolver.resolve_cipher(choice))
    }
}

/// The public key of a static X25519 secret (in fuzz builds, [`fuzz_dh`]'s).
pub(crate) fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    #[cfg(fuzzing)]
    return fuzz_dh::public(secret);
    #[cfg(not(fuzzing))]
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

/// Fuzz builds only (`--cfg fuzzing`, as cargo-fuzz compiles every crate): a stand-in for
/// X25519 that agrees as Diffie-Hellman must (both sides derive the same secret) at a
/// thousandth of the cost, exponentiation modulo 2^61 - 1. It has no security at all;
/// it lets a fuzzer run the whole handshake (every scalar multiplication of which is
/// otherwise most of an input's time, and worse under coverage instrumentation of the
/// field arithmetic) thousands of times a second. Keys keep their 32 bytes: the value in
/// the first 8, little-endian, the rest zero. (Compiled for tests too, to check it.)
#[cfg(any(fuzzing, test))]
pub(crate) mod fuzz_dh {
    use snow::types::{Dh, Random};

    const P: u64 = (1 << 61) - 1;
    const G: u64 = 3;

    fn mul(a: u64, b: u64) -> u64 {
        ((u128::from(a) * u128::from(b)) % u128::from(P)) as u64
    }

    fn pow(mut base: u64, mut exp: u64) -> u64 {
        let mut acc = 1;
        base %= P;
        while exp > 0 {
            if exp & 1 == 1 {
                acc = mul(acc, base);
            }
            base = mul(base, base);
            exp >>= 1;
        }
        acc
    }

    fn word(bytes: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        let n = bytes.len().min(8);
        w[..n].copy_from_slice(&bytes[..n]);
        u64::from_le_bytes(w)
    }

    fn key(value: u64) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&value.to_le_bytes());
        out
    }

    /// The public key of `secret`.
    pub(crate) fn public(secret: &[u8; 32]) -> [u8; 32] {
        key(pow(G, word(secret)))
    }

    /// See the module docs.
    #[derive(Default)]
    pub(crate) struct FuzzDh {
        private: [u8; 32],
        public: [u8; 32],
    }

    impl Dh for FuzzDh {
        fn name(&self) -> &'static str {
            "25519"
        }
        fn pub_len(&self) -> usize {
            32
        }
        fn priv_len(&self) -> usize {
            32
        }
        fn set(&mut self, privkey: &[u8]) {
            let mut private = [0u8; 32];
            let n = privkey.len().min(32);
            private[..n].copy_from_slice(&privkey[..n]);
            self.private = private;
            self.public = public(&private);
        }
        fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
            let mut private = [0u8; 32];
            rng.try_fill_bytes(&mut private)?;
            self.set(&private);
            Ok(())
        }
        fn pubkey(&self) -> &[u8] {
            &self.public
        }
        fn privkey(&self) -> &[u8] {
            &self.private
        }
        fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
            let shared = key(pow(word(pubkey), word(&self.private)));
            let n = out.len().min(32);
            out[..n].copy_from_slice(&shared[..n]);
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn both_sides_derive_the_same_secret() {
            let mut rng = crate::tunnel::noise::SeededRandom(rand::SeedableRng::from_seed([3; 32]));
            let (mut a, mut b) = (FuzzDh::default(), FuzzDh::default());
            a.generate(&mut rng).unwrap();
            b.generate(&mut rng).unwrap();
            assert_ne!(a.pubkey(), b.pubkey());
            let (mut ab, mut ba) = ([0u8; 32], [0u8; 32]);
            a.dh(b.pubkey(), &mut ab).unwrap();
            b.dh(a.pubkey(), &mut ba).unwrap();
            assert_eq!(ab, ba);
            assert_ne!(ab, [0; 32]);
            // Any bytes are a key: no panic, an answer.
            a.dh(&[0xFF; 3], &mut ab).unwrap();
        }
    }
}

/// Builds handshake states for one local static key.
#[derive(Clone)]
pub(crate) struct NoiseFactory {
    params: NoiseParams,
    private: Zeroizing<[u8; 32]>,
    psk: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for NoiseFactory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NoiseFactory").finish_non_exhaustive()
    }
}

impl NoiseFactory {
    pub(crate) fn new(private: [u8; 32], psk: Option<[u8; 32]>) -> Self {
        #[allow(clippy::expect_used)]
        let params = PATTERN.parse().expect("a valid Noise pattern");
        Self { params, private: Zeroizing::new(private), psk: Zeroizing::new(psk.unwrap_or([0; 32])) }
    }

    fn builder<'a>(&'a self, seed: [u8; 32], psk: Option<&'a [u8; 32]>) -> Result<Builder<'a>, snow::Error> {
        Builder::with_resolver(self.params.clone(), Box::new(Resolver { seed }))
            .prologue(PROLOGUE)?
            .psk(2, psk.unwrap_or(&self.psk))?
            .local_private_key(&self.private[..])
    }

    /// A handshake to `remote`'s static key, as initiator; `psk`: the peer's own
    /// pre-shared key, if it has one.
    pub(crate) fn initiator(
        &self,
        remote: &[u8; 32],
        seed: [u8; 32],
        psk: Option<&[u8; 32]>,
    ) -> Result<HandshakeState, snow::Error> {
        self.builder(seed, psk)?.remote_public_key(remote)?.build_initiator()
    }

    /// A handshake waiting for an initiation, as responder (with the node's pre-shared
    /// key: a peer with its own gets it with `set_psk` once the initiation names it,
    /// before the key is first used by the response).
    pub(crate) fn responder(&self, seed: [u8; 32]) -> Result<HandshakeState, snow::Error> {
        self.builder(seed, None)?.build_responder()
    }
}
