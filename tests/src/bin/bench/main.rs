//! wasmgate's benchmark suite (issue 5). Run it with `bash scripts/bench.sh`,
//! which builds in release and runs `bench run`; see `docs/benchmarks.md`.
//!
//! ```text
//! bench run [--out DIR] [--quick] [--only core,latency,request,traces,jetstream,jetstream-ack,overhead,recovery,startup,scale,fairness,rolling] [--publish]
//!           [--gateway-only | --native-only]  core runs of one kind only (for a profiler)
//!           [--js-plugin CRATE]          the JetStream section's plugin (default `echo`)
//! bench chart RESULTS.json OUT.svg      redraw the chart from a results file
//! bench loadgen ...                      the load generator (spawned by `run`)
//! bench requester ...                    the latency section's requester (spawned by `run`)
//! bench traces [--quick]                 the trace-export section in a process of its own (spawned by `run`)
//! ```
//!
//! Everything runs on loopback against nats-server processes this program
//! starts. Gateway and native runs alternate, each figure is the median of
//! several runs, and the JSON keeps every run.

mod chart;
mod child;
mod core;
mod js;
mod latency;
mod overhead;
mod recovery;
mod request;
mod scale;
mod startup;
mod stats;
mod traces;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde_json::{Value, json};
use wasmgate_tests::{NatsServer, nats_server_bin, repo_root};

struct Options {
    out: PathBuf,
    quick: bool,
    only: Option<Vec<String>>,
    publish: bool,
    only_kind: Option<core::Kind>,
    /// The plugin of the JetStream section (a crate in `plugins/`).
    js_plugin: String,
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "run".into());
    let result = match mode.as_str() {
        "loadgen" => {
            child::parse(args).and_then(|a| tokio::runtime::Runtime::new()?.block_on(child::run(a)))
        }
        "requester" => latency::parse(args)
            .and_then(|a| tokio::runtime::Runtime::new()?.block_on(latency::requester_main(a))),
        "chart" => (|| {
            let input = args.next().context("bench chart RESULTS.json OUT.svg")?;
            let output = args.next().context("bench chart RESULTS.json OUT.svg")?;
            let results: Value = serde_json::from_str(&std::fs::read_to_string(&input)?)?;
            chart::render(&results, std::path::Path::new(&output))
        })(),
        "run" => parse_run(args).and_then(run),
        "traces" => {
            let quick = args.any(|a| a == "--quick");
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(traces::main(quick)))
        }
        other => Err(anyhow::anyhow!(
            "unknown mode {other:?}: use run, chart, loadgen, requester or traces"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_run(mut args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
    let mut o = Options {
        out: repo_root().join("bench-results"),
        quick: false,
        only: None,
        publish: false,
        only_kind: None,
        js_plugin: "echo".into(),
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--out" => o.out = args.next().context("--out DIR")?.into(),
            "--quick" => o.quick = true,
            "--publish" => o.publish = true,
            "--gateway-only" => o.only_kind = Some(core::Kind::Gateway),
            "--native-only" => o.only_kind = Some(core::Kind::Native),
            "--js-plugin" => o.js_plugin = args.next().context("--js-plugin CRATE")?,
            "--only" => {
                o.only = Some(
                    args.next()
                        .context("--only a,b")?
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(o)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    let nats = std::process::Command::new(nats_server_bin())
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(if o.stdout.is_empty() {
                &o.stderr
            } else {
                &o.stdout
            })
            .trim()
            .to_string()
        })
        .unwrap_or_default();
    let git = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(repo_root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gib": mem_kib as f64 / 1024.0 / 1024.0,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "nats_server": nats,
        "git": git,
        "load_average_start": load_average(),
    })
}

fn run(o: Options) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let want = |s: &str| o.only.as_ref().is_none_or(|v| v.iter().any(|x| x == s));
    let started = Instant::now();
    let mut results = json!({
        "schema": "wasmgate-bench/1",
        "quick": o.quick,
        "unix_time": SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_secs(),
        "machine": machine(),
    });
    let mut loads = serde_json::Map::new();
    eprintln!(
        "bench: {} cores, {}, load average {}",
        results["machine"]["cores"],
        results["machine"]["cpu_model"].as_str().unwrap_or("?"),
        load_average()
    );
    // Build (or check) the plugins once, before anything is timed.
    wasmgate_tests::plugin_wasm("echo");

    if want("overhead") {
        eprintln!("bench: per-message overhead (load {})", load_average());
        loads.insert("overhead".into(), load_average().into());
        let p = overhead::Params {
            // Many short interleaved runs: on a shared machine a load spike
            // then spoils a few runs, not the median.
            iterations: if o.quick { 20_000 } else { 100_000 },
            runs: if o.quick { 5 } else { 15 },
            size: 128,
        };
        results["overhead"] = overhead::run(&p)?;
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let server = NatsServer::start();
        if want("core") {
            eprintln!("bench: core NATS throughput (load {})", load_average());
            loads.insert("core".into(), load_average().into());
            let messages = if o.quick { 100_000 } else { 1_000_000 };
            let p = core::Params {
                messages,
                size: 128,
                // 9, not 5: this VM's speed drifts ±15 % from minute to
                // minute, and a 5-run median of the ratio swung ±0.07.
                runs: if o.quick { 1 } else { 9 },
                // Room for every message of a run: nothing can be dropped by
                // the client's buffer, and slow-consumer events say if it was.
                capacity: (messages as usize + 65_536).next_power_of_two(),
                only_kind: o.only_kind,
            };
            results["core"] = core::run(&server, &p).await?;
        }
        if want("latency") {
            eprintln!("bench: request-reply latency (load {})", load_average());
            loads.insert("latency".into(), load_average().into());
            let p = latency::Params {
                sequential: if o.quick { 1_000 } else { 5_000 },
                steady: if o.quick { 5_000 } else { 30_000 },
                rate: 10_000,
                runs: if o.quick { 1 } else { 3 },
                size: 128,
            };
            results["latency"] = latency::run(&server, &p).await?;
        }
        if want("request") {
            eprintln!("bench: a request from a handler (load {})", load_average());
            loads.insert("request".into(), load_average().into());
            let p = request::Params {
                requests: if o.quick { 1_000 } else { 5_000 },
                runs: if o.quick { 1 } else { 5 },
                size: 128,
            };
            results["request"] = request::run(&server, &p).await?;
        }
        if want("traces") {
            eprintln!(
                "bench: what exporting traces costs (load {})",
                load_average()
            );
            loads.insert("traces".into(), load_average().into());
            results["traces"] = traces::spawn(o.quick).await?;
        }
        if want("jetstream") {
            eprintln!("bench: JetStream consume-and-ack (load {})", load_average());
            loads.insert("jetstream".into(), load_average().into());
            let p = js::Params {
                messages: if o.quick { 20_000 } else { 200_000 },
                size: 128,
                runs: if o.quick { 1 } else { 9 },
                plugin: o.js_plugin.clone(),
                outputs_stream: false,
            };
            results["jetstream"] = js::run(&server, &p).await?;
        }
        if want("jetstream-ack") {
            eprintln!(
                "bench: JetStream consume, handle and publish-with-ack (load {})",
                load_average()
            );
            loads.insert("jetstream-ack".into(), load_average().into());
            let p = js::Params {
                messages: if o.quick { 20_000 } else { 100_000 },
                size: 128,
                runs: if o.quick { 1 } else { 5 },
                plugin: o.js_plugin.clone(),
                outputs_stream: true,
            };
            results["jetstream_ack"] = js::run(&server, &p).await?;
        }
        if want("startup") {
            eprintln!(
                "bench: start-to-ready and idle RSS (load {})",
                load_average()
            );
            loads.insert("startup".into(), load_average().into());
            let p = startup::Params {
                plugins: 10,
                runs: 3,
            };
            results["startup"] = startup::run(&server, &p).await?;
        }
        if want("fairness") {
            eprintln!(
                "bench: a light binding beside a saturated one (load {})",
                load_average()
            );
            loads.insert("fairness".into(), load_average().into());
            results["fairness"] = scale::fairness(&server, if o.quick { 5 } else { 20 }).await?;
        }
        if want("scale") {
            eprintln!(
                "bench: 100 to 10,000 bindings on one gateway (load {})",
                load_average()
            );
            loads.insert("scale".into(), load_average().into());
            let p = scale::Params {
                bindings: if o.quick {
                    vec![100, 1_000]
                } else {
                    vec![100, 1_000, 10_000]
                },
                messages: if o.quick { 20_000 } else { 100_000 },
            };
            results["scale"] = scale::run(&server, &p).await?;
        }
        drop(server);
        if want("recovery") {
            eprintln!(
                "bench: recovery and hung-server detection (load {})",
                load_average()
            );
            loads.insert("recovery".into(), load_average().into());
            let p = recovery::Params {
                gaps: if o.quick {
                    vec![Duration::from_millis(1500), Duration::from_millis(2500)]
                } else {
                    (0..5)
                        .map(|i| Duration::from_millis(2000 + 500 * i))
                        .collect()
                },
                hung_runs: if o.quick { 1 } else { 3 },
            };
            results["recovery"] = recovery::run(&p).await?;
        }
        if want("rolling") {
            eprintln!(
                "bench: rolling restart of a 3-node cluster (load {})",
                load_average()
            );
            loads.insert("rolling".into(), load_average().into());
            results["rolling"] = rolling().await?;
        }
        anyhow::Ok(())
    })?;
    // Give every background task a moment to end before the runtime drops.
    rt.shutdown_timeout(Duration::from_secs(2));

    results["load_average_per_section"] = Value::Object(loads);
    results["machine"]["load_average_end"] = load_average().into();
    results["total_secs"] = started.elapsed().as_secs_f64().into();

    std::fs::create_dir_all(&o.out)?;
    let text = serde_json::to_string_pretty(&results)?;
    let stamp = results["unix_time"].as_u64().unwrap_or(0);
    std::fs::write(o.out.join(format!("results-{stamp}.json")), &text)?;
    std::fs::write(o.out.join("results.json"), &text)?;
    chart::render(&results, &o.out.join("chart.svg"))?;
    eprintln!(
        "bench: done in {:.0} s (load average at the end {}); wrote {}/results.json and chart.svg",
        started.elapsed().as_secs_f64(),
        load_average(),
        o.out.display()
    );
    if o.publish {
        let docs = repo_root().join("docs/bench");
        std::fs::create_dir_all(&docs)?;
        std::fs::write(docs.join("results.json"), &text)?;
        chart::render(&results, &docs.join("chart.svg"))?;
        eprintln!("bench: copied to {}", docs.display());
    }
    Ok(())
}

/// A rolling restart (each node of a 3-node cluster through lame duck mode)
/// under a steady core stream and a JetStream stream: what was sent, lost,
/// and how often the gateway moved (the driver is the test kit's,
/// `tests/src/rolling.rs`).
async fn rolling() -> anyhow::Result<Value> {
    use wasmgate_tests::cluster::Cluster;
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(3));
    let gw = wasmgate_tests::Running::start(wasmgate_tests::rolling::prepare(&cluster).await).await;
    let r = wasmgate_tests::rolling::run(&mut cluster).await;
    let s = gw.status();
    gw.stop().await;
    eprintln!(
        "  rolling restart: {} core messages, lost {}; {} JetStream inputs, {} outputs, {} handled; \
         {} lame-duck switches in {:.1} s",
        r.sent,
        r.lost.len(),
        r.js_sent,
        r.js_seen,
        s.bindings[1].handled,
        s.lame_duck_switches,
        r.elapsed.as_secs_f64()
    );
    Ok(json!({
        "core_sent": r.sent,
        "core_lost": r.lost.len(),
        "jetstream_acked": r.js_sent,
        "jetstream_outputs": r.js_seen,
        "jetstream_handled": s.bindings[1].handled,
        "lame_duck_switches": s.lame_duck_switches,
        "reconnects": s.total_reconnects,
        "restart_secs": r.elapsed.as_secs_f64(),
    }))
}
