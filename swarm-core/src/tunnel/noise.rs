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
/// from a seed.
struct Resolver {
    seed: [u8; 32],
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(StdRng::from_seed(self.seed))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        RingResolver.resolve_cipher(choice).or_else(|| DefaultResolver.resolve_cipher(choice))
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
