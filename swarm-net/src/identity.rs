//! A node's keys on disk: the Ed25519 libp2p identity and, beside it, the X25519 tunnel
//! key.
//!
//! The identity file holds the libp2p protobuf encoding of the keypair; the tunnel key
//! file (`<identity>.wg`) holds the secret in WireGuard's own format (base64 and a
//! newline), so `wg pubkey < node.key.wg` prints the tunnel public key. Both are created
//! on first use with mode 0600, written to a temporary file and renamed into place. A file
//! that exists but cannot be read or parsed is an error: it is never replaced.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use libp2p::identity::Keypair;
use swarm_core::identity::TunnelPublicKey;

/// A node's two keys.
#[derive(Clone)]
pub struct NodeIdentity {
    /// The libp2p identity; its public key is the `PeerId`.
    pub keypair: Keypair,
    tunnel_secret: [u8; 32],
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("peer_id", &self.keypair.public().to_peer_id())
            .field("tunnel_pubkey", &self.tunnel_public_key())
            .finish_non_exhaustive()
    }
}

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A key file exists but could not be read, or could not be written. The OS's reason
    /// is the error's `source()` (printed after it by error reporters that walk the
    /// chain, such as anyhow's `{:#}`).
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A key file exists but does not hold a valid key. It is left untouched.
    #[error("{path} is not a valid {what} key file ({detail}); move it away to create a new identity")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Which key.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A key file other users may write: anyone of them could replace the node's key.
    #[error("{path} is writable by other users (mode {mode:o}): anyone of them could replace the key; chmod 600 it")]
    Unsafe {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key of all zeros: no secret at all.
    #[error("{path} holds an all-zero {what} key, which is no secret; make a new one")]
    ZeroKey {
        /// The file.
        path: PathBuf,
        /// Which key.
        what: &'static str,
    },
    /// The identity exists but its tunnel key does not: peers know this node by that
    /// key, so a new one is made only when asked for.
    #[error("{path} exists but its tunnel key {tunnel} is missing: restore it, or ask for a new one (`run --new-tunnel-key`; peers then see a new WireGuard key)")]
    MissingTunnelKey {
        /// The identity file.
        path: PathBuf,
        /// The tunnel key file.
        tunnel: PathBuf,
    },
    /// A pre-shared key file does not hold a key.
    #[error("{path} is not a pre-shared key file (expected 32 bytes in base64 on one line, as `wg genpsk` writes)")]
    BadPsk {
        /// The file.
        path: PathBuf,
    },
}

/// Reads a swarm's pre-shared key from a file in WireGuard's format (`wg genpsk`: 32 bytes
/// in base64 on one line), for [`crate::NodeBuilder::tunnel_psk`].
pub fn load_psk(path: &Path) -> Result<[u8; 32], IdentityError> {
    let bytes = fs::read(path).map_err(|source| IdentityError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    check_permissions(path)?;
    let psk = parse_wg_key(&bytes).ok_or_else(|| IdentityError::BadPsk { path: path.to_owned() })?;
    if psk == [0; 32] {
        return Err(IdentityError::ZeroKey { path: path.to_owned(), what: "pre-shared" });
    }
    Ok(psk)
}

/// What [`NodeIdentity`]'s loader may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Create {
    /// Nothing: both files must exist.
    Nothing,
    /// A missing identity, and with a new identity its tunnel key.
    New,
    /// Also a tunnel key missing beside an existing identity.
    TunnelKeyToo,
}

impl NodeIdentity {
    /// Fresh keys from the OS random number generator, not stored anywhere.
    pub fn generate() -> Self {
        Self { keypair: Keypair::generate_ed25519(), tunnel_secret: rand::random() }
    }

    /// Keys from known bytes (tests and simulations).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let keypair = Keypair::ed25519_from_bytes(seed).unwrap_or_else(|_| Keypair::generate_ed25519());
        let mut tunnel_secret = seed;
        tunnel_secret[0] ^= 0xA5;
        Self { keypair, tunnel_secret }
    }

    /// Loads the keys at `path` (and `path` + `.wg`), creating both when there is no
    /// identity yet. An existing identity whose tunnel key is missing is an error
    /// ([`IdentityError::MissingTunnelKey`]): see
    /// [`load_or_create_tunnel_key`](Self::load_or_create_tunnel_key).
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        Self::load_with(path, Create::New)
    }

    /// [`load_or_create`](Self::load_or_create), also making a new tunnel key beside an
    /// existing identity whose key is missing.
    pub fn load_or_create_tunnel_key(path: &Path) -> Result<Self, IdentityError> {
        Self::load_with(path, Create::TunnelKeyToo)
    }

    /// Loads the keys at `path` (and `path` + `.wg`); a missing file is an error, and
    /// nothing is created (for tools that read a node's identity, such as `swarm-node id`).
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        Self::load_with(path, Create::Nothing)
    }

    fn load_with(path: &Path, create: Create) -> Result<Self, IdentityError> {
        let missing = |path: &Path| IdentityError::Io {
            action: "read",
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        let existed = read_if_exists(path)?;
        let identity_existed = existed.is_some();
        let keypair = match existed {
            Some(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|_| IdentityError::Corrupt {
                path: path.to_owned(),
                what: "libp2p identity",
                // libp2p's own text speaks of RSA and cargo features: say what is wrong.
                detail: if bytes.is_empty() {
                    "the file is empty".to_owned()
                } else {
                    format!("{} bytes that are not a protobuf-encoded Ed25519 keypair", bytes.len())
                },
            })?,
            None if create == Create::Nothing => return Err(missing(path)),
            None => {
                let keypair = Keypair::generate_ed25519();
                let bytes = keypair.to_protobuf_encoding().map_err(|e| IdentityError::Corrupt {
                    path: path.to_owned(),
                    what: "libp2p identity",
                    detail: e.to_string(),
                })?;
                write_new(path, &bytes)?;
                tracing::info!(path = %path.display(), peer_id = %keypair.public().to_peer_id(), "created identity");
                keypair
            }
        };
        let tunnel_path = tunnel_key_path(path);
        let tunnel_secret = match read_if_exists(&tunnel_path)? {
            Some(bytes) => {
                let secret = parse_wg_key(&bytes).ok_or_else(|| IdentityError::Corrupt {
                    path: tunnel_path.clone(),
                    what: "WireGuard tunnel",
                    detail: "expected 32 bytes in base64 on one line".to_owned(),
                })?;
                if secret == [0; 32] {
                    return Err(IdentityError::ZeroKey { path: tunnel_path, what: "WireGuard tunnel" });
                }
                secret
            }
            None if create == Create::Nothing => return Err(missing(&tunnel_path)),
            None if identity_existed && create == Create::New => {
                return Err(IdentityError::MissingTunnelKey { path: path.to_owned(), tunnel: tunnel_path });
            }
            None => {
                let secret: [u8; 32] = rand::random();
                let mut text = base64::engine::general_purpose::STANDARD.encode(secret);
                text.push('\n');
                write_new(&tunnel_path, text.as_bytes())?;
                secret
            }
        };
        Ok(Self { keypair, tunnel_secret })
    }

    /// The tunnel's X25519 secret.
    pub fn tunnel_secret(&self) -> &[u8; 32] {
        &self.tunnel_secret
    }

    /// The tunnel's X25519 public key.
    pub fn tunnel_public_key(&self) -> TunnelPublicKey {
        TunnelPublicKey::from_secret(&self.tunnel_secret)
    }
}

/// Where the tunnel key of the identity at `path` lives.
pub fn tunnel_key_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".wg");
    PathBuf::from(name)
}

/// Where a node with identity file `path` keeps its IPv4 overlay candidate: `path` +
/// `.overlay`, one line `RANGE N` (so restarts keep the address a clash moved it to).
pub fn overlay_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".overlay");
    PathBuf::from(name)
}

/// The candidate a previous run persisted for `range`; 0 when there is none, it was for
/// another range, or it does not parse (with a warning).
pub(crate) fn load_overlay_candidate(path: &Path, range: &swarm_core::overlay::Ipv4Range) -> u32 {
    let Ok(text) = std::fs::read_to_string(path) else { return 0 };
    let parsed = text.split_once(' ').and_then(|(r, n)| {
        let r: swarm_core::overlay::Ipv4Range = r.parse().ok()?;
        Some((r, n.trim().parse::<u32>().ok()?))
    });
    match parsed {
        Some((r, n)) if r == *range => n,
        Some(_) => 0,
        None => {
            tracing::warn!(path = %path.display(), "unreadable overlay candidate file: claiming from the first candidate");
            0
        }
    }
}

/// Persists candidate `n` of `range` (written to a temporary file, then renamed).
pub(crate) fn store_overlay_candidate(
    path: &Path,
    range: &swarm_core::overlay::Ipv4Range,
    n: u32,
) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{range} {n}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Where a gateway keeps its stock WireGuard peers: beside the identity file, as
/// `<file>.peers` (mode 0600: it holds their pre-shared keys).
pub fn stock_peers_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".peers");
    PathBuf::from(name)
}

/// A stock peer as persisted: its key, its pre-shared key, its IPv4 candidate, its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SavedStockPeer {
    pub(crate) key: [u8; 32],
    pub(crate) psk: [u8; 32],
    pub(crate) n: u32,
    pub(crate) name: String,
}

/// The stock peers a previous run persisted; lines that do not parse are skipped with a
/// warning, a missing file is none.
pub(crate) fn load_stock_peers(path: &Path) -> Vec<SavedStockPeer> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    warn_if_readable_by_others(path);
    let b64 = |s: &str| parse_wg_key(s.as_bytes());
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let mut f = line.splitn(4, ' ');
            let parsed = (|| {
                Some(SavedStockPeer {
                    key: b64(f.next()?)?,
                    psk: b64(f.next()?)?,
                    n: f.next()?.parse().ok()?,
                    name: f.next().unwrap_or_default().to_owned(),
                })
            })();
            if parsed.is_none() {
                tracing::warn!(path = %path.display(), "skipping an unreadable stock peer line");
            }
            parsed
        })
        .collect()
}

/// Persists the stock peers (mode 0600, written to a temporary file, then renamed).
pub(crate) fn store_stock_peers(path: &Path, peers: &[SavedStockPeer]) -> std::io::Result<()> {
    use std::io::Write as _;
    let b64 = |k: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
    let mut text =
        String::from("# swarm stock WireGuard peers: public key, pre-shared key, IPv4 candidate, name\n");
    for p in peers {
        text.push_str(&format!("{} {} {} {}\n", b64(&p.key), b64(&p.psk), p.n, p.name));
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn parse_wg_key(bytes: &[u8]) -> Option<[u8; 32]> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    decoded.try_into().ok()
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, IdentityError> {
    match fs::read(path) {
        Ok(bytes) => {
            check_permissions(path)?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io { action: "read", path: path.to_owned(), source }),
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format_args!("{:o}", meta.permissions().mode() & 0o777), "key file is readable by other users; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

/// A key file others may write is refused; one they may read is warned about.
#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(IdentityError::Unsafe { path: path.to_owned(), mode });
        }
    }
    warn_if_readable_by_others(path);
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_: &Path) -> Result<(), IdentityError> {
    Ok(())
}

/// Writes `bytes` to a new file at `path` with mode 0600, atomically.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let io_err = |action, source| IdentityError::Io { action, path: path.to_owned(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| io_err("create the directory of", e))?;
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let result = options.open(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", e));
    }
    // hard_link fails if `path` appeared meanwhile, so an existing key is never replaced.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked.map_err(|e| io_err("create", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_peers_persist_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = stock_peers_path(&dir.path().join("n.key"));
        assert!(load_stock_peers(&path).is_empty());
        let peers = vec![
            SavedStockPeer { key: [1; 32], psk: [2; 32], n: 3, name: "my laptop".into() },
            SavedStockPeer { key: [4; 32], psk: [5; 32], n: 0, name: String::new() },
        ];
        store_stock_peers(&path, &peers).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(load_stock_peers(&path), peers);
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("garbage line\n");
        fs::write(&path, text).unwrap();
        assert_eq!(load_stock_peers(&path), peers);
    }

    #[test]
    fn created_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/node.key");
        let a = NodeIdentity::load_or_create(&path).unwrap();
        let b = NodeIdentity::load_or_create(&path).unwrap();
        assert_eq!(a.keypair.public(), b.keypair.public());
        assert_eq!(a.tunnel_secret(), b.tunnel_secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for p in [path.clone(), tunnel_key_path(&path)] {
                assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "{p:?}");
            }
        }
        let wg = fs::read_to_string(tunnel_key_path(&path)).unwrap();
        assert_eq!(wg.trim().len(), 44, "WireGuard's base64 key format");
        assert_eq!(fs::read_dir(dir.path().join("keys")).unwrap().count(), 2, "no temporary files left");
    }

    /// Keys that are no secret, or that others could swap, are refused with a reason;
    /// a missing tunnel key beside an existing identity is made only when asked for.
    #[test]
    fn weak_keys_and_unsafe_files_are_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let psk = dir.path().join("swarm.psk");
        fs::write(&psk, format!("{}\n", base64::engine::general_purpose::STANDARD.encode([0u8; 32])))
            .unwrap();
        let err = load_psk(&psk).unwrap_err();
        assert!(
            matches!(err, IdentityError::ZeroKey { .. }) && err.to_string().contains("all-zero"),
            "{err}"
        );
        fs::write(&psk, format!("{}\n", base64::engine::general_purpose::STANDARD.encode([7u8; 32])))
            .unwrap();
        fs::set_permissions(&psk, fs::Permissions::from_mode(0o666)).unwrap();
        let err = load_psk(&psk).unwrap_err();
        assert!(err.to_string().contains("writable by other users (mode 666)"), "{err}");

        let path = dir.path().join("n.key");
        fs::write(&path, b"").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = NodeIdentity::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("the file is empty") && !err.contains("rsa"), "{err}");

        let path = dir.path().join("m.key");
        let first = NodeIdentity::load_or_create(&path).unwrap();
        fs::remove_file(tunnel_key_path(&path)).unwrap();
        let err = NodeIdentity::load_or_create(&path).unwrap_err();
        assert!(matches!(err, IdentityError::MissingTunnelKey { .. }), "{err}");
        assert!(!tunnel_key_path(&path).exists(), "nothing made");
        let again = NodeIdentity::load_or_create_tunnel_key(&path).unwrap();
        assert_eq!(again.keypair.public(), first.keypair.public());
        assert_ne!(again.tunnel_secret(), first.tunnel_secret());

        fs::write(
            tunnel_key_path(&path),
            format!("{}\n", base64::engine::general_purpose::STANDARD.encode([0u8; 32])),
        )
        .unwrap();
        let err = NodeIdentity::load_or_create(&path).unwrap_err();
        assert!(matches!(err, IdentityError::ZeroKey { .. }), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o646)).unwrap();
        let err = NodeIdentity::load(&path).unwrap_err();
        assert!(matches!(err, IdentityError::Unsafe { mode: 0o646, .. }), "{err}");
    }

    #[test]
    fn corrupt_files_are_errors_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        fs::write(&path, b"not a key").unwrap();
        let err = NodeIdentity::load_or_create(&path).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("node.key"));
        assert_eq!(fs::read(&path).unwrap(), b"not a key");

        let path = dir.path().join("good.key");
        NodeIdentity::load_or_create(&path).unwrap();
        fs::write(tunnel_key_path(&path), b"short\n").unwrap();
        let err = NodeIdentity::load_or_create(&path).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { what: "WireGuard tunnel", .. }), "{err}");
    }

    #[test]
    fn unreadable_path_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the key file should be.
        let path = dir.path().join("node.key");
        fs::create_dir(&path).unwrap();
        let err = NodeIdentity::load_or_create(&path).unwrap_err();
        assert!(matches!(err, IdentityError::Io { action: "read", .. }), "{err}");
    }
}
