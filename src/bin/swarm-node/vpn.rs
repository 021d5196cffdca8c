//! `swarm-node vpn add-peer | remove-peer | peers`: stock WireGuard peers of a running
//! node (`run --vpn --control PATH`), which becomes their gateway. `add-peer` prints the
//! peer's wg-quick configuration, complete but for its private key, which never leaves
//! the peer.

use std::net::SocketAddr;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// `swarm-node id`.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// The node's identity key file (its tunnel key is beside it, as <file>.wg)
    /// [default: <state-dir>/identity.key].
    #[arg(long, value_name = "FILE")]
    identity: Option<std::path::PathBuf>,
    /// The node's state directory [default: as `run`'s].
    #[arg(long, value_name = "DIR", conflicts_with = "identity")]
    state_dir: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// What `id --json` prints.
#[derive(serde::Serialize)]
struct IdJson {
    peer_id: String,
    wireguard_public_key: String,
}

/// Prints the peer id and the WireGuard public key of an identity, without creating one.
pub fn id(args: IdArgs) -> anyhow::Result<()> {
    let path = match args.identity {
        Some(path) => path,
        None => match args.state_dir {
            Some(dir) => dir.join(crate::state::IDENTITY_FILE),
            None => crate::state::default_dir()?.join(crate::state::IDENTITY_FILE),
        },
    };
    let identity = swarm::net::NodeIdentity::load(&path)?;
    let peer = identity.keypair.public().to_peer_id();
    let wg = B64.encode(identity.tunnel_public_key().0);
    if args.json {
        let id = IdJson { peer_id: peer.to_string(), wireguard_public_key: wg };
        println!("{}", serde_json::to_string(&id)?);
    } else {
        println!("peer id {peer}");
        println!("wireguard public key {wg}");
    }
    Ok(())
}

/// A fresh pre-shared key in base64: 32 bytes of a CSPRNG seeded by the OS.
pub fn genpsk() -> String {
    let key: [u8; 32] = rand::random();
    B64.encode(key)
}
use clap::{Args, Subcommand};
use swarm::net::answers::{GatewaySummary, StockPeerSummary};
use swarm::net::{Gateway, StockPeer};
use swarm::Node;

use crate::control::{call, unexpected, Body, ControlArgs, Request};

#[derive(Debug, Subcommand)]
pub enum VpnCommand {
    /// Register a stock WireGuard peer and print its wg-quick configuration.
    AddPeer(AddPeerArgs),
    /// Remove a stock WireGuard peer.
    RemovePeer(KeyArgs),
    /// List the stock WireGuard peers of the node.
    Peers(PeersArgs),
}

#[derive(Debug, Args)]
pub struct AddPeerArgs {
    #[command(flatten)]
    control: ControlArgs,
    /// The peer's WireGuard public key (base64, as `wg pubkey` prints it).
    #[arg(long, value_name = "BASE64", value_parser = parse_key)]
    pubkey: [u8; 32],
    /// A name for people.
    #[arg(long, default_value = "")]
    name: String,
    /// The gateway endpoint to write into the configuration (default: the node's
    /// announced tunnel endpoint), e.g. its public address behind a forwarded port.
    #[arg(long, value_name = "HOST:PORT")]
    endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(flatten)]
    control: ControlArgs,
    /// The peer's WireGuard public key (base64).
    #[arg(long, value_name = "BASE64", value_parser = parse_key)]
    pubkey: [u8; 32],
}

#[derive(Debug, Args)]
pub struct PeersArgs {
    #[command(flatten)]
    control: ControlArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_key(s: &str) -> Result<[u8; 32], String> {
    let bytes = B64.decode(s.trim()).map_err(|e| format!("not base64: {e}"))?;
    bytes.try_into().map_err(|b: Vec<u8>| format!("a WireGuard key is 32 bytes, this is {}", b.len()))
}

pub async fn run(command: VpnCommand) -> anyhow::Result<()> {
    match command {
        VpnCommand::AddPeer(a) => {
            let request = Request::VpnAddPeer { pubkey: B64.encode(a.pubkey), name: Some(a.name) };
            match call(&a.control.path(), &request, false).await? {
                Body::StockPeerAdded(added) => {
                    print!("{}", wg_quick(&added.peer, &added.gateway, a.endpoint.as_deref())?)
                }
                other => return Err(unexpected(other)),
            }
        }
        VpnCommand::RemovePeer(a) => {
            let request = Request::VpnRemovePeer { pubkey: B64.encode(a.pubkey) };
            match call(&a.control.path(), &request, false).await? {
                Body::StockPeerRemoved(true) => println!("removed {}", B64.encode(a.pubkey)),
                Body::StockPeerRemoved(false) => {
                    bail!("{} is not a stock peer of this node", B64.encode(a.pubkey))
                }
                other => return Err(unexpected(other)),
            }
        }
        VpnCommand::Peers(a) => match call(&a.control.path(), &Request::VpnPeers, a.json).await? {
            Body::StockPeers(peers) if a.json => println!("{}", serde_json::to_string(&peers)?),
            Body::StockPeers(peers) => print!("{}", peer_table(&peers)),
            other => return Err(unexpected(other)),
        },
    }
    Ok(())
}

/// A base64 key from a control request.
pub fn key_arg(text: &str) -> anyhow::Result<[u8; 32]> {
    parse_key(text).map_err(anyhow::Error::msg)
}

/// The control socket's `vpn-add-peer`: the name checked, the peer added.
pub async fn add_peer(node: &Node, pubkey: &str, name: &str) -> anyhow::Result<(StockPeer, Gateway)> {
    let key = key_arg(pubkey)?;
    if name.len() > 64 || name.chars().any(char::is_control) {
        bail!("a peer name is at most 64 printable characters");
    }
    Ok(node.add_stock_peer(key, name).await?)
}

/// The wg-quick configuration of a stock peer just added.
fn wg_quick(p: &StockPeerSummary, g: &GatewaySummary, endpoint: Option<&str>) -> anyhow::Result<String> {
    let mut address = vec![format!("{}/128", p.ipv6)];
    let mut allowed = vec![g.ipv6_prefix.clone()];
    if let (Some(v4), Some(range)) = (&p.ipv4, &g.ipv4_range) {
        address.insert(0, format!("{v4}/32"));
        allowed.insert(0, range.clone());
    }
    let endpoint = match endpoint {
        Some(e) => e.to_owned(),
        None => pick_endpoint(&g.endpoints)
            .context("the node announces no tunnel endpoint: give one with --endpoint HOST:PORT")?,
    };
    let psk = p.preshared_key.as_deref().context("the node's answer has no pre-shared key")?;
    Ok(format!(
        "# swarm VPN: stock peer {name} via gateway {gw}\n\
         # Replace the PrivateKey line with this peer's private key (the one `wg pubkey` turned into {pk}).\n\
         [Interface]\n\
         PrivateKey = <private key of {pk}>\n\
         Address = {address}\n\
         MTU = {mtu}\n\
         \n\
         [Peer]\n\
         PublicKey = {gw}\n\
         PresharedKey = {psk}\n\
         Endpoint = {endpoint}\n\
         AllowedIPs = {allowed}\n\
         PersistentKeepalive = 25\n",
        name = p.name,
        gw = g.public_key,
        pk = p.public_key,
        address = address.join(", "),
        mtu = g.mtu,
        allowed = allowed.join(", "),
    ))
}

/// The endpoint to give a stock peer: a routable one first (not unspecified, loopback
/// last).
fn pick_endpoint(endpoints: &[String]) -> Option<String> {
    let mut e: Vec<SocketAddr> = endpoints.iter().filter_map(|v| v.parse().ok()).collect();
    e.retain(|a| !a.ip().is_unspecified());
    e.sort_by_key(|a| (a.ip().is_loopback(), a.is_ipv6()));
    e.first().map(ToString::to_string)
}

fn peer_table(peers: &[StockPeerSummary]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<46} {:<16} {:<16} {:<40} {:<22} {:>10} {:>12} {:>12}\n",
        "PUBLIC KEY", "NAME", "IPV4", "IPV6", "ENDPOINT", "HANDSHAKE", "RX BYTES", "TX BYTES"
    );
    for p in peers {
        let handshake = p.last_handshake_s.map_or("never".to_owned(), |s| format!("{s} s ago"));
        let _ = writeln!(
            out,
            "{:<46} {:<16} {:<16} {:<40} {:<22} {:>10} {:>12} {:>12}",
            p.public_key,
            p.name,
            p.ipv4.as_deref().unwrap_or("-"),
            p.ipv6,
            p.endpoint.as_deref().unwrap_or("-"),
            handshake,
            p.rx_bytes,
            p.tx_bytes,
        );
    }
    let _ = writeln!(out, "{} stock peers", peers.len());
    out
}
