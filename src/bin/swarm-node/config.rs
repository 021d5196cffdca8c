//! `swarm-node run --config swarm.toml`: every flag of `run` (and the global `log`,
//! `log-format`) is a key of the file, named as the flag (`tunnel-port = 4191`;
//! `tunnel_port` is accepted too); a flag given on the command line wins over its key.
//! `swarm-node config --print-default` prints a file with every key, its default and its
//! help; `swarm-node config --check FILE` reads one as `run` would.
//!
//! The file becomes flags (`key = "v"` -> `--key=v`, a list -> the flag repeated, `true` ->
//! the bare flag) that clap parses like any other, so a value means in the file exactly
//! what it means as a flag, and is checked the same way.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command};

/// `swarm-node config`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true))]
pub struct ConfigArgs {
    /// Print a config file with every key of `run`, its default and its help.
    #[arg(long, group = "what")]
    print_default: bool,
    /// Read this config file as `run --config FILE` would, and say what is wrong.
    #[arg(long, value_name = "FILE", group = "what")]
    check: Option<PathBuf>,
}

/// Flags of `run` that have no key: the file itself, and clap's own.
const NOT_KEYS: &[&str] = &["config", "help", "version"];

/// The largest config file read (a typo'd path to a huge file is an error, not a hang).
const MAX_FILE: u64 = 1 << 20;

/// `argv` with the keys of the config file its `run --config FILE` names appended as
/// flags, except those the command line sets itself (or that conflict with one it sets).
/// `argv` unchanged when there is no `--config`.
pub fn with_config_file(cli: &Command, argv: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    // A command line clap rejects is reported by the caller's own parse.
    let Ok(matches) = cli.clone().try_get_matches_from(&argv) else { return Ok(argv) };
    let Some(("run", run_matches)) = matches.subcommand() else { return Ok(argv) };
    let Some(path) = run_matches.get_one::<PathBuf>("config") else { return Ok(argv) };
    let run = cli.find_subcommand("run").expect("run is a subcommand");
    let extra = flags_from_file(cli, run, path, |id| given(&matches, run_matches, id))?;
    let mut argv = argv;
    argv.extend(extra);
    Ok(argv)
}

/// Whether the command line itself set the argument `id` (of `run`, or a global one).
fn given(top: &ArgMatches, run: &ArgMatches, id: &str) -> bool {
    let on_command_line = |m: &ArgMatches| {
        m.try_get_raw(id).is_ok_and(|v| v.is_some()) && m.value_source(id) == Some(ValueSource::CommandLine)
    };
    on_command_line(run) || on_command_line(top)
}

/// The flags a config file stands for, leaving out those `given` says the command
/// line set.
fn flags_from_file(
    cli: &Command,
    run: &Command,
    path: &Path,
    given: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<OsString>> {
    let text = read_small(path)?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let name = key.replace('_', "-");
        let arg = keyed_args(cli, run).find(|a| a.get_long() == Some(&name)).ok_or_else(|| {
            anyhow::anyhow!(
                "config file {}: unknown key {key:?} (the keys are the flags of `swarm-node run`; \
                 `swarm-node config --print-default` lists them)",
                path.display()
            )
        })?;
        let id = arg.get_id().as_str();
        let overridden =
            given(id) || run.get_arg_conflicts_with(arg).iter().any(|c| given(c.get_id().as_str()));
        if overridden {
            continue;
        }
        let bad = |why: &str| anyhow::anyhow!("config file {}: key {key:?}: {why}", path.display());
        let flag = is_flag(arg);
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) if takes_many(arg) => items.iter().collect(),
            toml::Value::Array(_) => return Err(bad("takes one value, not a list")),
            one => vec![one],
        };
        for value in values {
            let text = match value {
                toml::Value::Boolean(on) if flag => {
                    if *on {
                        out.push(OsString::from(format!("--{name}")));
                    }
                    continue;
                }
                _ if flag => return Err(bad("is a switch: true or false")),
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Datetime(_) | toml::Value::Table(_) | toml::Value::Array(_) => {
                    return Err(bad("takes a string, a number or a list of them"))
                }
            };
            out.push(OsString::from(format!("--{name}={text}")));
        }
    }
    Ok(out)
}

/// The arguments a config file may set: `run`'s, and the global ones.
fn keyed_args<'a>(cli: &'a Command, run: &'a Command) -> impl Iterator<Item = &'a Arg> {
    run.get_arguments()
        .chain(cli.get_arguments().filter(|a| a.is_global_set()))
        .filter(|a| a.get_long().is_some() && !NOT_KEYS.contains(&a.get_id().as_str()))
}

fn is_flag(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

fn takes_many(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

fn read_small(path: &Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    let file =
        std::fs::File::open(path).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        anyhow::bail!("config file {}: larger than {MAX_FILE} bytes", path.display());
    }
    Ok(text)
}

/// `swarm-node config`.
pub fn config(cli: &Command, args: ConfigArgs) -> anyhow::Result<()> {
    let run = cli.find_subcommand("run").expect("run is a subcommand");
    if args.print_default {
        print!("{}", default_file(cli, run));
        return Ok(());
    }
    if let Some(path) = args.check {
        let flags = flags_from_file(cli, run, &path, |_| false)?;
        let mut argv: Vec<OsString> = vec!["swarm-node".into(), "run".into()];
        argv.extend(flags.iter().cloned());
        if let Err(e) = cli.clone().try_get_matches_from(&argv) {
            anyhow::bail!("config file {}: {}", path.display(), e.render().to_string().trim_end());
        }
        println!("{}: ok ({} settings)", path.display(), flags.len());
        for flag in flags {
            println!("  {}", flag.to_string_lossy());
        }
    }
    Ok(())
}

/// A config file with every key: its help as a comment, its default as the value (or
/// commented out where there is none).
fn default_file(cli: &Command, run: &Command) -> String {
    let mut out = String::from(
        "# swarm-node run --config FILE: every key is a flag of `swarm-node run`; a flag given\n\
         # on the command line wins over its key. Lists repeat the flag.\n",
    );
    for arg in keyed_args(cli, run) {
        let name = arg.get_long().unwrap_or_default();
        out.push('\n');
        let help = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
        for line in help.lines() {
            out.push_str(format!("# {line}").trim_end());
            out.push('\n');
        }
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        if is_flag(arg) {
            out.push_str(&format!("{name} = false\n"));
        } else if defaults.is_empty() {
            let placeholder =
                arg.get_value_names().and_then(|n| n.first()).map_or("VALUE".to_owned(), |n| n.to_string());
            let example = toml_value(&placeholder, takes_many(arg), false);
            out.push_str(&format!("# {name} = {example}\n"));
        } else if takes_many(arg) {
            let items: Vec<String> = defaults.iter().map(|d| toml_value(d, false, true)).collect();
            out.push_str(&format!("{name} = [{}]\n", items.join(", ")));
        } else {
            out.push_str(&format!("{name} = {}\n", toml_value(&defaults[0], false, true)));
        }
    }
    out
}

/// `value` as TOML: a bare integer where it is one, else a string; in a list if `list`.
fn toml_value(value: &str, list: bool, numbers_bare: bool) -> String {
    let one = if numbers_bare && value.parse::<i64>().is_ok() {
        value.to_owned()
    } else {
        toml::Value::String(value.to_owned()).to_string()
    };
    if list {
        format!("[{one}]")
    } else {
        one
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn keys_become_flags_and_the_command_line_wins() {
        let cli = crate::Cli::command();
        let f = file(
            "tunnel_port = 5000\nnamespace = \"lab\"\nbootstrap = [\"/ip4/127.0.0.1/tcp/1\", \"/ip4/127.0.0.1/tcp/2\"]\nvpn = true\nno-control = true\nlog = \"debug\"\n",
        );
        let path = f.path().to_str().unwrap();
        let out = with_config_file(
            &cli,
            argv(&["swarm-node", "run", "--config", path, "--namespace", "mine", "--control", "/tmp/c.sock"]),
        )
        .unwrap();
        let tail: Vec<String> = out[8..].iter().map(|s| s.to_string_lossy().into_owned()).collect();
        // namespace is on the command line; no-control conflicts with its --control. The
        // file's keys come in their order in the table (sorted).
        assert_eq!(
            tail,
            [
                "--bootstrap=/ip4/127.0.0.1/tcp/1",
                "--bootstrap=/ip4/127.0.0.1/tcp/2",
                "--log=debug",
                "--tunnel-port=5000",
                "--vpn"
            ]
        );
        assert!(cli.clone().try_get_matches_from(&out).is_ok());
    }

    #[test]
    fn a_bad_file_is_a_clear_error() {
        let cli = crate::Cli::command();
        for (text, says) in [
            ("tunnel-prot = 1\n", "unknown key \"tunnel-prot\""),
            ("vpn = \"yes\"\n", "is a switch"),
            ("namespace = [\"a\", \"b\"]\n", "takes one value"),
            ("namespace = \n", "config file"),
            ("[run]\nnamespace = \"a\"\n", "unknown key \"run\""),
        ] {
            let f = file(text);
            let err =
                with_config_file(&cli, argv(&["swarm-node", "run", "--config", f.path().to_str().unwrap()]))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        let err = with_config_file(&cli, argv(&["swarm-node", "run", "--config", "/nonexistent/swarm.toml"]))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/swarm.toml"), "{err}");
    }

    #[test]
    fn the_default_file_reads_back_as_the_defaults() {
        let cli = crate::Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        let text = default_file(&cli, run);
        let f = file(&text);
        let flags = flags_from_file(&cli, run, f.path(), |_| false).unwrap();
        let mut args = argv(&["swarm-node", "run"]);
        args.extend(flags);
        let m = cli.clone().try_get_matches_from(&args).unwrap();
        let (_, run_m) = m.subcommand().unwrap();
        assert_eq!(run_m.get_one::<u16>("tunnel_port"), Some(&crate::run::DEFAULT_TUNNEL_PORT));
        assert_eq!(run_m.get_many::<swarm::Multiaddr>("listen").unwrap().count(), 2);
        // Every key of run is in it.
        for arg in keyed_args(&cli, run) {
            assert!(text.contains(&format!("{} =", arg.get_long().unwrap())), "{:?} missing", arg.get_long());
        }
    }
}
