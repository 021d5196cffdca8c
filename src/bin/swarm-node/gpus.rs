//! `swarm-node gpus`: the local GPU inventory, and the `--gpus` choice shared with `run`.

use std::fmt::Write as _;
use std::sync::Arc;

use clap::Args;
use swarm::gpu::{auto_probe, GpuProbe, GpuReport, StaticProbe};

/// Where a node's GPU inventory comes from.
#[derive(Debug, Clone)]
pub enum GpuChoice {
    /// NVML if the NVIDIA driver answers, else no GPU.
    Auto,
    /// A fixed inventory from a spec.
    Static(StaticProbe),
}

impl GpuChoice {
    pub fn probe(&self) -> Arc<dyn GpuProbe> {
        match self {
            GpuChoice::Auto => auto_probe(),
            GpuChoice::Static(p) => Arc::new(p.clone()),
        }
    }
}

/// `auto`, `none`, or a spec such as `2xA100-80GB,1xRTX4090-24GB`.
pub fn parse_gpus(text: &str) -> Result<GpuChoice, String> {
    if text.trim().eq_ignore_ascii_case("auto") {
        return Ok(GpuChoice::Auto);
    }
    text.parse().map(GpuChoice::Static).map_err(|e: swarm::gpu::SpecError| e.to_string())
}

#[derive(Debug, Args)]
pub struct GpusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// `auto` (NVML, else none), `none`, or a spec such as 2xA100-80GB.
    #[arg(long, value_name = "auto|SPEC", default_value = "auto", value_parser = parse_gpus)]
    gpus: GpuChoice,
}

pub async fn gpus(args: GpusArgs) -> anyhow::Result<()> {
    let probe = args.gpus.probe();
    let report = tokio::task::spawn_blocking(move || probe.report()).await??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".to_owned(), ToString::to_string)
}

fn table(report: &GpuReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "source {}, driver {}, CUDA {}, {} GPU(s)",
        report.source,
        opt(&report.driver_version),
        opt(&report.cuda_version),
        report.devices.len()
    );
    if report.devices.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:>3} {:<22} {:>10} {:>10} {:>5} {:>5} {:>4} {:>8} {:>8} {:>5} {:>9} {:<8}",
        "IDX",
        "NAME",
        "MEM MiB",
        "USED MiB",
        "GPU%",
        "MEM%",
        "CC",
        "POWER W",
        "LIMIT W",
        "TEMP",
        "ECC c/u",
        "PCIE"
    );
    for d in &report.devices {
        let _ = writeln!(
            out,
            "{:>3} {:<22} {:>10} {:>10} {:>5} {:>5} {:>4} {:>8} {:>8} {:>5} {:>9} {:<8}",
            d.index,
            d.name,
            d.memory_total_mib,
            d.memory_used_mib,
            opt(&d.utilization_gpu_pct),
            opt(&d.utilization_memory_pct),
            opt(&d.compute_capability),
            d.power_draw_w.map_or("-".to_owned(), |w| format!("{w:.0}")),
            d.power_limit_w.map_or("-".to_owned(), |w| format!("{w:.0}")),
            opt(&d.temperature_c),
            format!("{}/{}", opt(&d.ecc_corrected), opt(&d.ecc_uncorrected)),
            match (d.pcie_gen, d.pcie_width) {
                (Some(g), Some(w)) => format!("gen{g} x{w}"),
                _ => "-".to_owned(),
            },
        );
        if let Some(uuid) = &d.uuid {
            let _ = writeln!(out, "    {uuid}");
        }
    }
    out
}
