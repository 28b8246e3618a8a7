//! Start-to-ready with 10 plugins, and idle memory.
//!
//! In-process: `Gateway::start` (validate, build the engine, compile or load
//! and pre-instantiate ten copies of `echo`, start the supervisor) until
//! `ready()` (connected, every binding confirmed by a probe round trip).
//! Each run starts cold (an empty compile cache in a new folder: every
//! component compiled), then warm (the same folder: every component loaded
//! from the cache).
//!
//! Process: the release `wasmgate` binary with the same ten plugins from a
//! TOML file and the warm cache, from spawn until `GET /readyz` answers 200,
//! then its resident memory (`VmRSS` in `/proc/PID/status`) after two idle
//! seconds.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmgate::Gateway;
use wasmgate_tests::{NatsServer, free_port, plugin, plugin_wasm};

use crate::stats::Sample;

pub struct Params {
    pub plugins: usize,
    pub runs: usize,
}

fn config(server: &NatsServer, n: usize, cache: &std::path::Path) -> wasmgate::Config {
    let mut c = wasmgate::Config::default();
    c.nats.servers = vec![server.url()];
    c.http.listen = String::new();
    c.runtime.cache_dir = cache.to_path_buf();
    for i in 0..n {
        let subject = format!("p{i}.>");
        c.plugins.push(plugin(
            &format!("echo{i}"),
            "echo",
            &[&subject],
            &[("prefix", "out")],
        ));
    }
    c
}

fn toml_config(server: &NatsServer, n: usize, http: &str, cache: &std::path::Path) -> String {
    let wasm = plugin_wasm("echo");
    let mut t = format!(
        "[nats]\nservers = [\"{}\"]\n\n[http]\nlisten = \"{http}\"\n\n[runtime]\ncache_dir = \"{}\"\n",
        server.url(),
        cache.display()
    );
    for i in 0..n {
        t += &format!(
            "\n[[plugin]]\nname = \"echo{i}\"\npath = \"{}\"\nconfig = {{ prefix = \"out\" }}\n\n[[plugin.binding]]\nsubject = \"p{i}.>\"\n",
            wasm.display()
        );
    }
    t
}

fn rss_kib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{field} not in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?)
}

pub async fn run(server: &NatsServer, p: &Params) -> anyhow::Result<Value> {
    let mut start_ms = Vec::new();
    let mut ready_ms = Vec::new();
    let mut cold_ready_ms = Vec::new();
    let mut proc_ready_ms = Vec::new();
    let mut rss_mib = Vec::new();
    let mut hwm_mib = Vec::new();

    let exe = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("wasmgate");
    let dir = tempfile::tempdir()?;

    for run in 0..p.runs {
        let cache = tempfile::tempdir()?;
        // In-process, cold then warm.
        let start_ready = async || -> anyhow::Result<(Duration, Duration)> {
            let t = Instant::now();
            let shutdown = CancellationToken::new();
            let gw =
                Gateway::start(config(server, p.plugins, cache.path()), shutdown.clone()).await?;
            let started = t.elapsed();
            gw.ready(Duration::from_secs(60)).await?;
            let ready = t.elapsed();
            shutdown.cancel();
            gw.wait().await?;
            Ok((started, ready))
        };
        let (_, cold) = start_ready().await?;
        let (started, ready) = start_ready().await?;
        cold_ready_ms.push(cold.as_secs_f64() * 1e3);
        start_ms.push(started.as_secs_f64() * 1e3);
        ready_ms.push(ready.as_secs_f64() * 1e3);

        // The binary.
        anyhow::ensure!(
            exe.is_file(),
            "{} not built (cargo build --release -p wasmgate)",
            exe.display()
        );
        let http = format!("127.0.0.1:{}", free_port());
        let path = dir.path().join("ten.toml");
        std::fs::write(&path, toml_config(server, p.plugins, &http, cache.path()))?;
        let t = Instant::now();
        let mut child = tokio::process::Command::new(&exe)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("pid")?;
        let http_client = reqwest::Client::new();
        let url = format!("http://{http}/readyz");
        loop {
            if let Ok(r) = http_client.get(&url).send().await
                && r.status() == 200
            {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(60),
                "wasmgate not ready in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let proc_ready = t.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = rss_kib(pid, "VmRSS:")? / 1024.0;
        let hwm = rss_kib(pid, "VmHWM:")? / 1024.0;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        eprintln!(
            "  startup run {}: in-process cold ready {:.0} ms; warm start {:.0} ms, ready {:.0} ms; binary (warm) ready {:.0} ms, idle RSS {:.1} MiB (peak {:.1} MiB)",
            run + 1,
            cold.as_secs_f64() * 1e3,
            started.as_secs_f64() * 1e3,
            ready.as_secs_f64() * 1e3,
            proc_ready.as_secs_f64() * 1e3,
            rss,
            hwm
        );
        proc_ready_ms.push(proc_ready.as_secs_f64() * 1e3);
        rss_mib.push(rss);
        hwm_mib.push(hwm);
    }
    let ready = Sample::new("ms", ready_ms);
    let cold = Sample::new("ms", cold_ready_ms);
    let proc_ready = Sample::new("ms", proc_ready_ms);
    let rss = Sample::new("MiB", rss_mib);
    eprintln!("  start-to-ready in-process, cold cache: {}", cold.show());
    eprintln!(
        "  start-to-ready in-process, warm cache: {} (target <= 300 ms)",
        ready.show()
    );
    eprintln!(
        "  start-to-ready binary, warm cache:     {}",
        proc_ready.show()
    );
    eprintln!("  idle RSS binary:           {}", rss.show());
    Ok(json!({
        "plugins": p.plugins,
        "compile_cache": true,
        "note": "cold: an empty compile cache, every component compiled; warm: the same cache folder, every component loaded",
        "in_process_cold_ready": cold,
        "in_process_start": Sample::new("ms", start_ms),
        "in_process_ready": ready,
        "target_ready_ms": 300,
        "binary_ready": proc_ready,
        "binary_idle_rss": rss,
        "binary_peak_rss": Sample::new("MiB", hwm_mib),
    }))
}
