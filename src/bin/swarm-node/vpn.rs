//! `swarm-node vpn add-peer | remove-peer | peers`: stock WireGuard peers of a running
//! node (`run --vpn --control PATH`), which becomes their gateway. `add-peer` prints the
//! peer's wg-quick configuration, complete but for its private key, which never leaves
//! the peer.

use std::net::SocketAddr;
use std::time::Duration;

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
        println!("{}", serde_json::json!({ "peer_id": peer.to_string(), "wireguard_public_key": wg }));
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
use serde_json::{json, Value};
use swarm::net::{Gateway, StockPeer};
use swarm::Node;

use crate::control::{call, ControlArgs};

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
            let request = json!({"op": "vpn-add-peer", "pubkey": B64.encode(a.pubkey), "name": a.name});
            let answer = call(&a.control.path(), &request, false).await?;
            print!("{}", wg_quick(&answer, a.endpoint.as_deref())?);
        }
        VpnCommand::RemovePeer(a) => {
            let answer = call(
                &a.control.path(),
                &json!({"op": "vpn-remove-peer", "pubkey": B64.encode(a.pubkey)}),
                false,
            )
            .await?;
            if answer["removed"] != json!(true) {
                bail!("{} is not a stock peer of this node", B64.encode(a.pubkey));
            }
            println!("removed {}", B64.encode(a.pubkey));
        }
        VpnCommand::Peers(a) => {
            let answer = call(&a.control.path(), &json!({"op": "vpn-peers"}), a.json).await?;
            if a.json {
                println!("{}", answer["peers"]);
            } else {
                print!("{}", peer_table(&answer["peers"]));
            }
        }
    }
    Ok(())
}

/// A stock peer as JSON; with its pre-shared key only when `secret`.
pub fn peer_json(p: &StockPeer, secret: bool) -> Value {
    let mut v = json!({
        "public_key": B64.encode(p.public_key),
        "name": p.name,
        "ipv6": p.ipv6.to_string(),
        "ipv4": p.ipv4.map(|a| a.to_string()),
        "endpoint": p.endpoint.map(|e| e.to_string()),
        "last_handshake_s": p.last_handshake.map(|d| d.as_secs()),
        "rx_bytes": p.rx_bytes,
        "tx_bytes": p.tx_bytes,
    });
    if secret {
        v["preshared_key"] = json!(B64.encode(p.preshared_key));
    }
    v
}

fn gateway_json(g: &Gateway) -> Value {
    json!({
        "public_key": B64.encode(g.public_key),
        "endpoints": g.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "ipv6_prefix": format!("{}/48", g.ipv6_prefix),
        "ipv4_range": g.ipv4_range.map(|r| r.to_string()),
        "mtu": g.mtu,
    })
}

/// The control socket's VPN operations.
pub async fn handle(node: &Node, op: &str, request: &Value) -> anyhow::Result<Value> {
    match op {
        "vpn-add-peer" => {
            let key =
                parse_key(request["pubkey"].as_str().context("which key?")?).map_err(anyhow::Error::msg)?;
            let name = request["name"].as_str().unwrap_or_default();
            if name.len() > 64 || name.chars().any(char::is_control) {
                bail!("a peer name is at most 64 printable characters");
            }
            let (peer, gateway) = node.add_stock_peer(key, name).await?;
            Ok(json!({"ok": true, "peer": peer_json(&peer, true), "gateway": gateway_json(&gateway)}))
        }
        "vpn-remove-peer" => {
            let key =
                parse_key(request["pubkey"].as_str().context("which key?")?).map_err(anyhow::Error::msg)?;
            Ok(json!({"ok": true, "removed": node.remove_stock_peer(key).await?}))
        }
        _ => {
            let peers: Vec<Value> = node.stock_peers().await?.iter().map(|p| peer_json(p, false)).collect();
            Ok(json!({"ok": true, "peers": peers}))
        }
    }
}

/// The wg-quick configuration of the peer in an `add-peer` answer.
fn wg_quick(answer: &Value, endpoint: Option<&str>) -> anyhow::Result<String> {
    let (p, g) = (&answer["peer"], &answer["gateway"]);
    let s = |v: &Value| v.as_str().map(str::to_owned).context("incomplete answer from the node");
    let mut address = vec![format!("{}/128", s(&p["ipv6"])?)];
    let mut allowed = vec![s(&g["ipv6_prefix"])?];
    if let (Some(v4), Some(range)) = (p["ipv4"].as_str(), g["ipv4_range"].as_str()) {
        address.insert(0, format!("{v4}/32"));
        allowed.insert(0, range.to_owned());
    }
    let endpoint = match endpoint {
        Some(e) => e.to_owned(),
        None => pick_endpoint(g["endpoints"].as_array().map(Vec::as_slice).unwrap_or_default())
            .context("the node announces no tunnel endpoint: give one with --endpoint HOST:PORT")?,
    };
    let name = p["name"].as_str().unwrap_or_default();
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
        gw = s(&g["public_key"])?,
        pk = s(&p["public_key"])?,
        address = address.join(", "),
        mtu = g["mtu"].as_u64().unwrap_or(1420),
        psk = s(&p["preshared_key"])?,
        allowed = allowed.join(", "),
    ))
}

/// The endpoint to give a stock peer: a routable one first (not unspecified, loopback
/// last).
fn pick_endpoint(endpoints: &[Value]) -> Option<String> {
    let mut e: Vec<SocketAddr> = endpoints.iter().filter_map(|v| v.as_str()?.parse().ok()).collect();
    e.retain(|a| !a.ip().is_unspecified());
    e.sort_by_key(|a| (a.ip().is_loopback(), a.is_ipv6()));
    e.first().map(ToString::to_string)
}

fn peer_table(peers: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<46} {:<16} {:<16} {:<40} {:<22} {:>10} {:>12} {:>12}\n",
        "PUBLIC KEY", "NAME", "IPV4", "IPV6", "ENDPOINT", "HANDSHAKE", "RX BYTES", "TX BYTES"
    );
    for p in peers.as_array().map(Vec::as_slice).unwrap_or_default() {
        let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
        let handshake = p["last_handshake_s"]
            .as_u64()
            .map_or("never".to_owned(), |s| format!("{:?} ago", Duration::from_secs(s)));
        let _ = writeln!(
            out,
            "{:<46} {:<16} {:<16} {:<40} {:<22} {:>10} {:>12} {:>12}",
            text(&p["public_key"]),
            text(&p["name"]),
            text(&p["ipv4"]),
            text(&p["ipv6"]),
            text(&p["endpoint"]),
            handshake,
            p["rx_bytes"].as_u64().unwrap_or(0),
            p["tx_bytes"].as_u64().unwrap_or(0),
        );
    }
    let n = peers.as_array().map_or(0, Vec::len);
    let _ = writeln!(out, "{n} stock peers");
    out
}
