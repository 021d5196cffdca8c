// `swarm-node`: the reference node program, built on the public `swarm` API.
//
// - `swarm-node run` — one node: listens, bootstraps, gossips, prints a peer table.
// - `swarm-node gpus` — the local GPU inventory (NVML, or a static spec), `--json` too.
// - `swarm-node links` — the links of a running node and their SLA state, `--json` too.
// - `swarm-node status` / `peers` / `ping` / `rtt` / `monitor` / `join` / `leases` — a
//   running node, read through its control socket (served by `run` by default).
// - `swarm-node place` / `release` / `renew` / `placements` — place tasks through a
//   running node's control socket, end or extend them, list them.
// - `swarm-node vpn add-peer` / `remove-peer` / `peers` — stock WireGuard peers of a
//   running node (`run --vpn --control PATH`), which becomes their gateway.
// - `swarm-node demo` — N nodes on loopback in one process: waits until every node sees
//   every record and prints the cluster table (`--json` for a machine-readable summary).

mod config;
mod control;
mod demo;
mod gpus;
mod inspect;
mod links;
mod notify;
mod ping;
mod place;
mod run;
mod state;
mod table;
mod vpn;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "swarm-node", version = VERSION, about = "A swarm node: decentralized GPU cloud, no coordinator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter, e.g. `info` or `swarm_net=debug` [default: RUST_LOG, else
    /// warn,swarm_gpu=info,libp2p_kad=error]. The flag wins over RUST_LOG.
    #[arg(long, global = true)]
    log: Option<String>,
    /// Log lines as text, or as one JSON object each (for log collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// The version with the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SWARM_GIT_COMMIT"), ")");

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node until Ctrl-C.
    Run(Box<run::RunArgs>),
    /// Run a local mesh of N nodes on loopback and show what they see.
    Demo(demo::DemoArgs),
    /// Show this machine's GPUs (NVML if the NVIDIA driver is there).
    Gpus(gpus::GpusArgs),
    /// This node: id, addresses (the tunnel port included), NAT, overlay, restart
    /// grace, and its peers with their tunnels and links.
    Status(inspect::ShowArgs),
    /// The peers this node knows: tunnel state and path, NAT, RTT, jitter, loss, SLA.
    Peers(inspect::ShowArgs),
    /// The round trip to a peer over its tunnel, each time (like `tailscale ping`).
    Ping(ping::PingArgs),
    /// The round trip between two nodes: measured by one of them, or estimated from
    /// their coordinates, and which.
    Rtt(inspect::RttArgs),
    /// The node's events as they happen: links degraded and recovered, records,
    /// tunnels and their paths, leases.
    Monitor(inspect::ShowArgs),
    /// Connect the running node to a member at this address.
    Join(inspect::JoinArgs),
    /// The leases this node granted on its GPUs: to whom, for which task, until when.
    Leases(inspect::ShowArgs),
    /// Show the links of a running node (started with --metrics) and their SLA state.
    Links(links::LinksArgs),
    /// Place a task (or a gang) through a running node (started with --control).
    Place(Box<place::PlaceArgs>),
    /// Release a task placed with `place`.
    Release(place::TaskIdArgs),
    /// Renew the leases of a task placed with `place`.
    Renew(place::TaskIdArgs),
    /// List the placements a running node holds.
    Placements(place::ControlArgs),
    /// Stock WireGuard peers of a running node (started with --vpn and --control).
    #[command(subcommand)]
    Vpn(vpn::VpnCommand),
    /// Print a node's identity from its key files: peer id and WireGuard public key
    /// (creates nothing).
    Id(vpn::IdArgs),
    /// Print a shell completion script: `swarm-node completions bash >
    /// /etc/bash_completion.d/swarm-node` (or zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print a config file for `run --config FILE` with every key and its default, or
    /// check one.
    Config(config::ConfigArgs),
    /// Print a new pre-shared key for a private swarm (base64, as `wg genpsk` does): put
    /// it in a file (mode 0600) and give every node `--psk-file FILE`.
    Genpsk,
}

/// Parses durations such as `500ms`, `5s`, `2m`, `1h` (more than zero, at most 24 h).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration_or_zero(text)?;
    if d.is_zero() {
        return Err(format!("{:?} is out of range (0 < d <= 24h)", text.trim()));
    }
    Ok(d)
}

/// Like [`parse_duration`], where zero means something (`--lease-grace 0`: none).
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| (&text[..i], &text[i..]));
    let value: f64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration such as 500ms, 5s, 2m or 1h"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{text:?} is out of range (0 <= d <= 24h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The log filter without `--log` or RUST_LOG.
const DEFAULT_LOG: &str = "warn,swarm_gpu=info,libp2p_kad=error";

fn main() -> ExitCode {
    use clap::CommandFactory as _;
    // `run --config FILE`: the file's keys become flags the command line did not set.
    let argv = match config::with_config_file(&Cli::command(), std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    // An explicit `--log` wins; then RUST_LOG; then the default.
    let filter = match &cli.log {
        Some(spec) => tracing_subscriber::EnvFilter::new(spec),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
    };
    // Colours only on a terminal: not in files, pipes or journald.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(ansi).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run::run(*args).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::Gpus(args) => gpus::gpus(args).await,
            Command::Status(args) => inspect::status(args).await,
            Command::Peers(args) => inspect::peers(args).await,
            Command::Ping(args) => ping::ping(args).await,
            Command::Rtt(args) => inspect::rtt(args).await,
            Command::Monitor(args) => inspect::monitor(args).await,
            Command::Join(args) => inspect::join(args).await,
            Command::Leases(args) => inspect::leases(args).await,
            Command::Links(args) => links::links(args),
            Command::Place(args) => place::place(*args).await,
            Command::Release(args) => place::release(args, false).await,
            Command::Renew(args) => place::release(args, true).await,
            Command::Placements(args) => place::placements(args).await,
            Command::Vpn(command) => vpn::run(command).await,
            Command::Id(args) => vpn::id(args),
            Command::Config(args) => config::config(&Cli::command(), args),
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "swarm-node", &mut std::io::stdout());
                Ok(())
            }
            Command::Genpsk => {
                println!("{}", vpn::genpsk());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
