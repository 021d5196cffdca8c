//! The node's state directory: its identity (`identity.key`, the tunnel key beside it as
//! `identity.key.wg`) and the addresses of the members it knew (`peers`), which a
//! restart dials so that it rejoins with no `--bootstrap`.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use swarm::{Multiaddr, Node};

/// The identity key file's name in the state directory.
pub const IDENTITY_FILE: &str = "identity.key";
/// The known members' addresses, one multiaddr per line.
const PEERS_FILE: &str = "peers";
/// How many addresses are kept.
pub const MAX_PEERS: usize = 64;
/// The longest peers file read back.
const MAX_PEERS_FILE: u64 = 64 * 1024;

/// The state directory `run` and `id` use unless given `--state-dir`:
/// `$STATE_DIRECTORY` under systemd (`StateDirectory=swarm-node`; its first entry),
/// else `$XDG_DATA_HOME/swarm-node`, else `/var/lib/swarm-node` for root, else
/// `$HOME/.local/share/swarm-node`.
pub fn default_dir() -> anyhow::Result<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dirs) = var("STATE_DIRECTORY") {
        // systemd joins several with ':'.
        let first = dirs.to_string_lossy().split(':').next().unwrap_or_default().to_owned();
        return Ok(PathBuf::from(first));
    }
    if let Some(dir) = var("XDG_DATA_HOME") {
        return Ok(dir.join("swarm-node"));
    }
    if std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).ok() == Some(0) {
        return Ok(PathBuf::from("/var/lib/swarm-node"));
    }
    match var("HOME") {
        Some(home) => Ok(home.join(".local/share/swarm-node")),
        None => anyhow::bail!("no state directory: set $HOME or give --state-dir DIR"),
    }
}

/// `dir`, or the default; created (mode 0700) if missing.
pub fn open(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(d) => d.to_owned(),
        None => default_dir()?,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    }
    anyhow::ensure!(dir.is_dir(), "the state directory {} is not a directory", dir.display());
    Ok(dir)
}

/// The addresses saved by the last run, skipping lines that are not multiaddrs ending
/// in `/p2p/<id>` (a warning each). None when there is no file.
pub fn load_peers(dir: &Path) -> Vec<Multiaddr> {
    use std::io::Read as _;
    let path = dir.join(PEERS_FILE);
    let Ok(file) = std::fs::File::open(&path) else { return Vec::new() };
    let mut text = String::new();
    if let Err(e) = file.take(MAX_PEERS_FILE).read_to_string(&mut text) {
        tracing::warn!(path = %path.display(), error = %e, "cannot read the saved peers");
        return Vec::new();
    }
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match line.parse::<Multiaddr>() {
            Ok(a) if a.iter().last().is_some_and(|p| p.tag() == "p2p") => out.push(a),
            _ => tracing::warn!(path = %path.display(), line, "not a saved peer address: skipped"),
        }
        if out.len() == MAX_PEERS {
            break;
        }
    }
    out
}

/// Saves the members' addresses the node knows now, if it knows any (an empty table
/// keeps the last file: a node that lost its peers still knows where they were), in
/// `dir` if there is one.
pub async fn save_peers(node: &Node, dir: Option<&Path>) -> anyhow::Result<usize> {
    let Some(dir) = dir else { return Ok(0) };
    let addrs = node.known_addresses(MAX_PEERS).await?;
    if addrs.is_empty() {
        return Ok(0);
    }
    let mut text = String::from("# members this node knew, dialed on restart (swarm-node run writes this)\n");
    for a in &addrs {
        text.push_str(&a.to_string());
        text.push('\n');
    }
    let path = dir.join(PEERS_FILE);
    let tmp = dir.join(format!("{PEERS_FILE}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(addrs.len())
}
