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
//! binding against the same messages on one binding. At each size, a
//! config reload (SIGHUP) that adds ten entries and one that removes them,
//! until every binding is bound again, with the gateway's own split of it.
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
            // SIGHUP is the only reload trigger: with the watcher on too,
            // writing the file and signalling made two reloads, and the
            // second (nothing changed) was the one the status showed.
            .args(["run", "--no-watch", "--config"])
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

/// SIGHUP with `config` written to `path`, until the status shows one more
/// reload and `bindings` bindings, every one bound: the time seen from
/// outside, and the gateway's own figures for it (`last_reload`: reading,
/// checking and loading; re-binding until the server confirmed).
async fn reload(
    c: &Child,
    path: &Path,
    config: &str,
    bindings: usize,
) -> anyhow::Result<(Duration, f64, f64)> {
    let before = c.status().await?["config_reloads"].as_u64().unwrap_or(0);
    std::fs::write(path, config)?;
    let t = Instant::now();
    c.signal(nix::sys::signal::Signal::SIGHUP)?;
    // Polling a /status of 10,000 bindings costs the gateway too.
    let poll = Duration::from_millis(if bindings > 2_000 { 50 } else { 5 });
    loop {
        let s = c.status().await?;
        let all = s["bindings"]
            .as_array()
            .map(|b| b.len() == bindings && b.iter().all(|b| b["state"] == "bound"));
        if s["config_reloads"].as_u64().unwrap_or(0) > before && all == Some(true) {
            let outside = t.elapsed();
            let last = &s["last_reload"];
            return Ok((
                outside,
                last["load_ms"].as_f64().context("last_reload.load_ms")?,
                last["rebind_ms"]
                    .as_f64()
                    .context("last_reload.rebind_ms")?,
            ));
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(60),
            "reload not done in 60 s"
        );
        tokio::time::sleep(poll).await;
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
    if files == Files::Shared {
        let mut added = text.clone();
        added += &toml_config(server, 10, entries, &http, &cache, &wasm)
            .split_once("\n[[plugin]]")
            .map(|(_, rest)| format!("\n[[plugin]]{rest}"))
            .unwrap_or_default();
        let (mut add, mut add_load, mut add_rebind) = (Vec::new(), Vec::new(), Vec::new());
        let (mut remove, mut remove_load, mut remove_rebind) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            let (outside, load, rebind) = reload(&c, &path, &added, bindings + 100).await?;
            add.push(outside.as_secs_f64() * 1e3);
            add_load.push(load);
            add_rebind.push(rebind);
            let (outside, load, rebind) = reload(&c, &path, &text, bindings).await?;
            remove.push(outside.as_secs_f64() * 1e3);
            remove_load.push(load);
            remove_rebind.push(rebind);
        }
        reloads = json!({
            "add_10_entries": Sample::new("ms", add),
            "add_10_load": Sample::new("ms", add_load),
            "add_10_rebind": Sample::new("ms", add_rebind),
            "remove_10_entries": Sample::new("ms", remove),
            "remove_10_load": Sample::new("ms", remove_load),
            "remove_10_rebind": Sample::new("ms", remove_rebind),
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
            let m = |k: &str| reloads[k]["median"].as_f64().unwrap_or(f64::NAN);
            format!(
                "; reload +10 entries {:.1} ms (gateway: load {:.1} + re-bind {:.1}), \
                 -10 entries {:.1} ms (load {:.1} + re-bind {:.1})",
                m("add_10_entries"),
                m("add_10_load"),
                m("add_10_rebind"),
                m("remove_10_entries"),
                m("remove_10_load"),
                m("remove_10_rebind"),
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

/// The cumulative buckets of one histogram of the `light` binding in `/metrics`.
async fn light_buckets(c: &Child, name: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    buckets(&c.http, name, "light", "light.*").await
}

/// The cumulative buckets of one histogram of a binding in the `/metrics`
/// of the gateway listening on `http`.
pub async fn buckets(
    http: &str,
    name: &str,
    plugin: &str,
    subject: &str,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await?
        .text()
        .await?;
    let prefix = format!("{name}_bucket{{le=\"");
    let labels = format!(",plugin=\"{plugin}\",subject=\"{subject}\"}} ");
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&labels))
    {
        let rest = &line[prefix.len()..];
        let (le, rest) = rest.split_once('"').context("le label")?;
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        let n: f64 = rest.rsplit_once(' ').context("value")?.1.parse()?;
        out.push((le, n));
    }
    anyhow::ensure!(
        !out.is_empty(),
        "no {name} for binding {plugin} {subject} in /metrics"
    );
    Ok(out)
}

/// The bucket bound (ms) holding the `p` quantile of what was recorded
/// between two readings of the same histogram.
pub fn bucket_quantile_ms(before: &[(f64, f64)], after: &[(f64, f64)], p: f64) -> f64 {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .zip(before)
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    let total = delta.last().map_or(0.0, |d| d.1);
    delta
        .iter()
        .find(|(_, n)| *n >= p * total)
        .map_or(f64::NAN, |(le, _)| le * 1e3)
}

/// Keep `subject`'s binding saturated: publish until 40,000 are in flight,
/// wait for its outputs (`outputs`) to bring that under 20,000, again.
async fn saturate(
    url: String,
    subject: &'static str,
    outputs: &'static str,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<u64>>> {
    let load = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(url)
        .await?;
    let mut outputs = load.subscribe(outputs).await?;
    load.flush().await?;
    Ok(tokio::spawn(async move {
        let payload = bytes::Bytes::from(vec![b'a'; 128]);
        let mut sent: u64 = 0;
        let mut seen: u64 = 0;
        while !stop.is_cancelled() {
            while sent - seen < 40_000 {
                load.publish(subject, payload.clone()).await?;
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
    }))
}

/// One phase of the fairness run: the light binding's round trips, and
/// what its gateway measured of them (queue wait, handler) as bucket bounds.
struct Phase {
    round_trips: Vec<f64>,
    queue_wait_p99_ms: f64,
    handler_p99_ms: f64,
}

async fn phase(nc: &async_nats::Client, light: &Child, secs: u64) -> anyhow::Result<Phase> {
    let (w0, h0) = (
        light_buckets(light, "wasmgate_queue_wait_seconds").await?,
        light_buckets(light, "wasmgate_handler_duration_seconds").await?,
    );
    let round_trips = light_round_trips(nc, secs).await?;
    let (w1, h1) = (
        light_buckets(light, "wasmgate_queue_wait_seconds").await?,
        light_buckets(light, "wasmgate_handler_duration_seconds").await?,
    );
    Ok(Phase {
        round_trips,
        queue_wait_p99_ms: bucket_quantile_ms(&w0, &w1, 0.99),
        handler_p99_ms: bucket_quantile_ms(&h0, &h1, 0.99),
    })
}

impl Phase {
    fn show(&self) -> String {
        format!(
            "{:.2}/{:.2} ms (in the gateway p99: queue wait <= {} ms, handler <= {} ms)",
            percentile(self.round_trips.clone(), 0.5),
            percentile(self.round_trips.clone(), 0.99),
            self.queue_wait_p99_ms,
            self.handler_p99_ms
        )
    }

    fn json(&self) -> Value {
        json!({
            "p50_ms": percentile(self.round_trips.clone(), 0.5),
            "p99_ms": percentile(self.round_trips.clone(), 0.99),
            "gateway_queue_wait_p99_bucket_ms": self.queue_wait_p99_ms,
            "gateway_handler_p99_bucket_ms": self.handler_p99_ms,
            "round_trips_ms": self.round_trips,
        })
    }
}

fn heavy_config(server: &NatsServer, http: &str, cache: &Path, with_light: bool) -> String {
    let mut text = format!(
        "[nats]\nservers = [\"{}\"]\n\n[http]\nlisten = \"{http}\"\n\n[runtime]\ncache_dir = \"{}\"\n\
         \n[[plugin]]\nname = \"heavy\"\npath = \"{}\"\nconfig = {{ prefix = \"out\" }}\npublish_allow = [\"out.>\"]\n\n[[plugin.binding]]\nsubject = \"{}\"\n",
        server.url(),
        cache.display(),
        plugin_wasm("uppercase").display(),
        if with_light { "heavy" } else { "heavy2" },
    );
    if with_light {
        text += &format!(
            "\n[[plugin]]\nname = \"light\"\npath = \"{}\"\n\n[[plugin.binding]]\nsubject = \"light.*\"\n",
            plugin_wasm("echo").display(),
        );
    }
    text
}

/// The light binding idle, beside a saturated binding of another plugin in
/// the same gateway, and beside the same load in another gateway process
/// (what the machine's two cores cost on their own).
pub async fn fairness(server: &NatsServer, secs: u64) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let http = format!("127.0.0.1:{}", free_port());
    let path = dir.path().join("wasmgate.toml");
    std::fs::write(&path, heavy_config(server, &http, &cache, true))?;
    let (c, _) = Child::start(&path, http).await?;
    let nc = async_nats::connect(server.url()).await?;
    // Warm up, then idle.
    light_round_trips(&nc, 1).await?;
    let idle = phase(&nc, &c, secs).await?;

    // The same gateway's heavy binding saturated.
    let stop = tokio_util::sync::CancellationToken::new();
    let heavy = saturate(server.url(), "heavy", "out.heavy", stop.clone()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    let before = c.status().await?["bindings"][0]["handled"]
        .as_u64()
        .unwrap_or(0);
    let heavy_wait0 = buckets(&c.http, "wasmgate_queue_wait_seconds", "heavy", "heavy").await?;
    let loaded = phase(&nc, &c, secs).await?;
    let heavy_wait1 = buckets(&c.http, "wasmgate_queue_wait_seconds", "heavy", "heavy").await?;
    let heavy_wait_p50 = bucket_quantile_ms(&heavy_wait0, &heavy_wait1, 0.5);
    let after = c.status().await?["bindings"][0]["handled"]
        .as_u64()
        .unwrap_or(0);
    let heavy_rate = (after - before) as f64 / t.elapsed().as_secs_f64();
    stop.cancel();
    heavy.await??;
    let dropped = c.status().await?["bindings"][0]["dropped"]
        .as_u64()
        .unwrap_or(0);

    // The same load on a second gateway process.
    let http2 = format!("127.0.0.1:{}", free_port());
    let path2 = dir.path().join("other.toml");
    std::fs::write(&path2, heavy_config(server, &http2, &cache, false))?;
    let (other, _) = Child::start(&path2, http2).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let heavy = saturate(server.url(), "heavy2", "out.heavy2", stop.clone()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let apart = phase(&nc, &c, secs).await?;
    stop.cancel();
    heavy.await??;
    other.stop().await;
    c.stop().await;
    eprintln!(
        "  fairness: light binding at 10 requests/s, round trip p50/p99 idle {}; \
         beside a saturated binding in the same gateway {} (target p99 < 10 ms); \
         with that load in another gateway process {}; \
         the saturated one handled {heavy_rate:.0} msg/s (its queue wait p50 <= {heavy_wait_p50} ms), \
         dropped {dropped}",
        idle.show(),
        loaded.show(),
        apart.show(),
    );
    Ok(json!({
        "requests_per_phase": idle.round_trips.len(),
        "idle": idle.json(),
        "beside_saturated": loaded.json(),
        "saturated_in_other_process": apart.json(),
        "idle_p50_ms": percentile(idle.round_trips.clone(), 0.5),
        "idle_p99_ms": percentile(idle.round_trips.clone(), 0.99),
        "loaded_p50_ms": percentile(loaded.round_trips.clone(), 0.5),
        "loaded_p99_ms": percentile(loaded.round_trips.clone(), 0.99),
        "target_p99_ms": 10,
        "saturated_msgs_per_sec": heavy_rate,
        "saturated_dropped": dropped,
        "saturated_queue_wait_p50_bucket_ms": heavy_wait_p50,
    }))
}
