//! Cost at scale and fairness, on the release `wasmgate` binary run from a
//! TOML file as operators run it.
//!
//! Scale: 100, 1,000 and 10,000 core bindings, ten per plugin entry, every
//! entry the same `uppercase` component (and once 100 entries of distinct
//! component files: the same code with a custom section naming the entry,
//! so each is its own compile). For each: start-to-ready with a cold and a
//! warm compile cache (spawn until `GET /readyz` answers 200), resident
//! memory and OS threads after two idle seconds, CPU used over five idle
//! seconds, and the time to handle messages spread evenly over every
//! binding against the same messages on one binding. At 100 and 1,000
//! bindings, a config reload (SIGHUP) that adds ten entries and one that
//! removes them, until every binding is bound again.
//!
//! Fairness: a light binding answering 10 requests a second, its request
//! round trips measured on an idle gateway and then while another plugin's
//! binding is kept saturated (a backlog of tens of thousands of messages at
//! all times), side by side in one run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};
use wasmgate_tests::{NatsServer, free_port, plugin_wasm};

use crate::stats::{Sample, cpu_secs, median};

pub struct Params {
    pub bindings: Vec<usize>,
    pub messages: u64,
}

/// A `wasmgate run` child and its HTTP address.
struct Child {
    child: tokio::process::Child,
    pid: u32,
    http: String,
}

impl Child {
    async fn start(config: &Path, http: String) -> anyhow::Result<(Child, Duration)> {
        let exe = std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("wasmgate");
        anyhow::ensure!(exe.is_file(), "{} not built", exe.display());
        let t = Instant::now();
        let child = tokio::process::Command::new(&exe)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("pid")?;
        let c = Child { child, pid, http };
        c.until_ready(Duration::from_secs(120)).await?;
        Ok((c, t.elapsed()))
    }

    async fn until_ready(&self, within: Duration) -> anyhow::Result<()> {
        let t = Instant::now();
        let http = reqwest::Client::new();
        let url = format!("http://{}/readyz", self.http);
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            anyhow::ensure!(t.elapsed() < within, "wasmgate not ready in {within:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn status(&self) -> anyhow::Result<Value> {
        Ok(reqwest::get(format!("http://{}/status", self.http))
            .await?
            .json()
            .await?)
    }

    fn proc_field(&self, field: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .with_context(|| format!("{field} not in /proc/{}/status", self.pid))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()?)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), signal)?;
        Ok(())
    }

    async fn stop(mut self) {
        let _ = self.signal(nix::sys::signal::Signal::SIGTERM);
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }
}

/// How the plugin entries get their component.
#[derive(Clone, Copy, PartialEq)]
enum Files {
    /// Every entry the same file.
    Shared,
    /// A file of its own per entry (distinct bytes: each is compiled).
    Distinct,
}

/// The config: `entries` entries of ten bindings `s.<e>.<j>` each, publishing to `out.s.<e>.<j>`.
fn toml_config(
    server: &NatsServer,
    entries: usize,
    first: usize,
    http: &str,
    cache: &Path,
    wasm: &[PathBuf],
) -> String {
    let mut t = format!(
        "[nats]\nservers = [\"{}\"]\n\n[http]\nlisten = \"{http}\"\n\n[runtime]\ncache_dir = \"{}\"\n",
        server.url(),
        cache.display()
    );
    for e in first..first + entries {
        t += &format!(
            "\n[[plugin]]\nname = \"p{e}\"\npath = \"{}\"\nconfig = {{ prefix = \"out\" }}\npublish_allow = [\"out.>\"]\n",
            wasm[e % wasm.len()].display()
        );
        for j in 0..10 {
            t += &format!("\n[[plugin.binding]]\nsubject = \"s.{e}.{j}\"\n");
        }
    }
    t
}

/// `entries` copies of `uppercase`, each with a custom section of its own
/// (a component may carry custom sections anywhere at its top level).
fn distinct_files(dir: &Path, entries: usize) -> anyhow::Result<Vec<PathBuf>> {
    let bytes = std::fs::read(plugin_wasm("uppercase"))?;
    (0..entries)
        .map(|e| {
            let name = b"wasmgate-bench-entry";
            let payload = format!("{e}");
            let mut section = vec![name.len() as u8];
            section.extend_from_slice(name);
            section.extend_from_slice(payload.as_bytes());
            let mut out = bytes.clone();
            out.push(0); // custom section
            out.push(section.len() as u8);
            out.extend_from_slice(&section);
            let path = dir.join(format!("uppercase-{e}.wasm"));
            std::fs::write(&path, out)?;
            Ok(path)
        })
        .collect()
}

/// Publish `messages` over `subjects` round robin and wait for every output.
async fn handle_all(
    nc: &async_nats::Client,
    subjects: &[String],
    messages: u64,
) -> anyhow::Result<Duration> {
    let mut outputs = nc.subscribe("out.>").await?;
    nc.flush().await?;
    let t = Instant::now();
    let payload = bytes::Bytes::from(vec![b'a'; 128]);
    let receive = async {
        let mut n = 0;
        while n < messages {
            outputs.next().await.context("outputs ended")?;
            n += 1;
        }
        anyhow::Ok(())
    };
    let send = async {
        for i in 0..messages {
            nc.publish(
                subjects[i as usize % subjects.len()].clone(),
                payload.clone(),
            )
            .await?;
        }
        nc.flush().await?;
        anyhow::Ok(())
    };
    let (r, s) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(receive, send)
    })
    .await
    .context("outputs did not all arrive in 120 s")?;
    r?;
    s?;
    Ok(t.elapsed())
}

/// SIGHUP after writing `config`, then the time until the status shows the
/// reload and `bindings` bindings, every one bound.
async fn reload(c: &Child, path: &Path, config: &str, bindings: usize) -> anyhow::Result<Duration> {
    let before = c.status().await?["config_reloads"].as_u64().unwrap_or(0);
    std::fs::write(path, config)?;
    let t = Instant::now();
    c.signal(nix::sys::signal::Signal::SIGHUP)?;
    loop {
        let s = c.status().await?;
        let all = s["bindings"]
            .as_array()
            .map(|b| b.len() == bindings && b.iter().all(|b| b["state"] == "bound"));
        if s["config_reloads"].as_u64().unwrap_or(0) > before && all == Some(true) {
            return Ok(t.elapsed());
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(60),
            "reload not done in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn one(
    server: &NatsServer,
    bindings: usize,
    files: Files,
    messages: u64,
) -> anyhow::Result<Value> {
    let entries = bindings / 10;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let wasm = match files {
        Files::Shared => vec![plugin_wasm("uppercase")],
        Files::Distinct => distinct_files(dir.path(), entries + 10)?,
    };
    let http = format!("127.0.0.1:{}", free_port());
    let path = dir.path().join("wasmgate.toml");
    let text = toml_config(server, entries, 0, &http, &cache, &wasm);
    std::fs::write(&path, &text)?;
    let (cold_child, cold) = Child::start(&path, http.clone()).await?;
    cold_child.stop().await;
    let (c, warm) = Child::start(&path, http.clone()).await?;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = c.proc_field("VmRSS:")? / 1024.0;
    let threads = c.proc_field("Threads:")?;
    let pid = c.pid.to_string();
    let cpu0 = cpu_secs(&pid).context("cpu")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu = (cpu_secs(&pid).context("cpu")? - cpu0) / 5.0 * 100.0;

    let nc = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(server.url())
        .await?;
    let all: Vec<String> = (0..entries)
        .flat_map(|e| (0..10).map(move |j| format!("s.{e}.{j}")))
        .collect();
    let one_subject = vec!["s.0.0".to_string()];
    let mut spread = Vec::new();
    let mut single = Vec::new();
    for _ in 0..3 {
        spread.push(handle_all(&nc, &all, messages).await?.as_secs_f64() * 1e3);
        single.push(handle_all(&nc, &one_subject, messages).await?.as_secs_f64() * 1e3);
    }
    let ratio = median(&single) / median(&spread);

    let mut reloads = Value::Null;
    if bindings <= 1_000 && files == Files::Shared {
        let mut added = text.clone();
        added += &toml_config(server, 10, entries, &http, &cache, &wasm)
            .split_once("\n[[plugin]]")
            .map(|(_, rest)| format!("\n[[plugin]]{rest}"))
            .unwrap_or_default();
        let mut add = Vec::new();
        let mut remove = Vec::new();
        for _ in 0..3 {
            add.push(
                reload(&c, &path, &added, bindings + 100)
                    .await?
                    .as_secs_f64()
                    * 1e3,
            );
            remove.push(reload(&c, &path, &text, bindings).await?.as_secs_f64() * 1e3);
        }
        reloads = json!({
            "add_10_entries": Sample::new("ms", add),
            "remove_10_entries": Sample::new("ms", remove),
        });
    }
    let peak = c.proc_field("VmHWM:")? / 1024.0;
    c.stop().await;
    let spread = Sample::new("ms", spread);
    let single = Sample::new("ms", single);
    eprintln!(
        "  {bindings} bindings ({entries} entries, {} files): ready cold {:.0} ms, warm {:.0} ms; \
         idle RSS {rss:.1} MiB (peak {peak:.1}), {threads} threads, idle CPU {idle_cpu:.2} %; \
         {messages} messages over all bindings {} ms, on one {} ms (one/all {ratio:.2}){}",
        if files == Files::Shared {
            "shared"
        } else {
            "distinct"
        },
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3,
        spread.show(),
        single.show(),
        if reloads.is_null() {
            String::new()
        } else {
            format!(
                "; reload +10 entries {} ms, -10 entries {} ms",
                reloads["add_10_entries"]["median"], reloads["remove_10_entries"]["median"]
            )
        }
    );
    Ok(json!({
        "bindings": bindings,
        "entries": entries,
        "files": if files == Files::Shared { "shared" } else { "distinct" },
        "ready_cold_ms": cold.as_secs_f64() * 1e3,
        "ready_warm_ms": warm.as_secs_f64() * 1e3,
        "idle_rss_mib": rss,
        "peak_rss_mib": peak,
        "threads": threads,
        "idle_cpu_percent": idle_cpu,
        "messages": messages,
        "spread_over_all": spread,
        "on_one_binding": single,
        "one_over_all": ratio,
        "reload": reloads,
    }))
}

pub async fn run(server: &NatsServer, p: &Params) -> anyhow::Result<Value> {
    let mut curve = Vec::new();
    for &n in &p.bindings {
        curve.push(one(server, n, Files::Shared, p.messages).await?);
    }
    let distinct = one(server, 1_000, Files::Distinct, p.messages).await?;
    Ok(json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "targets": {"ready_warm_ms_at_10000": 1000, "idle_rss_mib_at_10000": 256},
        "curve": curve,
        "distinct_files": distinct,
    }))
}

/// Request round trips to the light binding, one every 100 ms for `secs`.
async fn light_round_trips(nc: &async_nats::Client, secs: u64) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for i in 0..secs * 10 {
        tick.tick().await;
        let t = Instant::now();
        let r = nc
            .request(format!("light.{}", i % 10), "ping".into())
            .await
            .context("light request")?;
        out.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            r.payload.as_ref() == b"ping",
            "light binding answered {:?}",
            r.payload
        );
    }
    Ok(out)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

pub async fn fairness(server: &NatsServer, secs: u64) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let http = format!("127.0.0.1:{}", free_port());
    let path = dir.path().join("wasmgate.toml");
    std::fs::write(
        &path,
        format!(
            "[nats]\nservers = [\"{}\"]\n\n[http]\nlisten = \"{http}\"\n\n[runtime]\ncache_dir = \"{}\"\n\
             \n[[plugin]]\nname = \"heavy\"\npath = \"{}\"\nconfig = {{ prefix = \"out\" }}\npublish_allow = [\"out.>\"]\n\n[[plugin.binding]]\nsubject = \"heavy\"\n\
             \n[[plugin]]\nname = \"light\"\npath = \"{}\"\n\n[[plugin.binding]]\nsubject = \"light.*\"\n",
            server.url(),
            dir.path().join("cache").display(),
            plugin_wasm("uppercase").display(),
            plugin_wasm("echo").display(),
        ),
    )?;
    let (c, _) = Child::start(&path, http).await?;
    let nc = async_nats::connect(server.url()).await?;
    // Warm up, then idle.
    light_round_trips(&nc, 1).await?;
    let idle = light_round_trips(&nc, secs).await?;

    // Keep the heavy binding's backlog between 20,000 and 40,000 messages.
    let load = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(server.url())
        .await?;
    let mut outputs = load.subscribe("out.heavy").await?;
    load.flush().await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let heavy = {
        let (load, stop) = (load.clone(), stop.clone());
        tokio::spawn(async move {
            let payload = bytes::Bytes::from(vec![b'a'; 128]);
            let mut sent: u64 = 0;
            let mut seen: u64 = 0;
            while !stop.is_cancelled() {
                while sent - seen < 40_000 {
                    load.publish("heavy", payload.clone()).await?;
                    sent += 1;
                }
                load.flush().await?;
                while sent - seen > 20_000 {
                    tokio::select! {
                        m = outputs.next() => { m.context("outputs ended")?; seen += 1; }
                        _ = stop.cancelled() => break,
                    }
                }
            }
            anyhow::Ok(seen)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    let before = c.status().await?["bindings"][0]["handled"]
        .as_u64()
        .unwrap_or(0);
    let loaded = light_round_trips(&nc, secs).await?;
    let after = c.status().await?["bindings"][0]["handled"]
        .as_u64()
        .unwrap_or(0);
    let heavy_rate = (after - before) as f64 / t.elapsed().as_secs_f64();
    stop.cancel();
    heavy.await??;
    let dropped = c.status().await?["bindings"][0]["dropped"]
        .as_u64()
        .unwrap_or(0);
    c.stop().await;
    let (idle_p50, idle_p99) = (
        percentile(idle.clone(), 0.5),
        percentile(idle.clone(), 0.99),
    );
    let (load_p50, load_p99) = (
        percentile(loaded.clone(), 0.5),
        percentile(loaded.clone(), 0.99),
    );
    eprintln!(
        "  fairness: light binding at 10 requests/s, round trip p50/p99 idle {idle_p50:.2}/{idle_p99:.2} ms, \
         beside a saturated binding {load_p50:.2}/{load_p99:.2} ms (target p99 < 10 ms); \
         the saturated one handled {heavy_rate:.0} msg/s, dropped {dropped}"
    );
    Ok(json!({
        "requests_per_phase": idle.len(),
        "idle_p50_ms": idle_p50,
        "idle_p99_ms": idle_p99,
        "loaded_p50_ms": load_p50,
        "loaded_p99_ms": load_p99,
        "target_p99_ms": 10,
        "saturated_msgs_per_sec": heavy_rate,
        "saturated_dropped": dropped,
        "idle_round_trips_ms": idle,
        "loaded_round_trips_ms": loaded,
    }))
}
