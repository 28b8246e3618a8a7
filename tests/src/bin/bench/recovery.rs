//! Recovery after a crash, and detection of a hung server.
//!
//! Recovery: the gateway (`echo` on `in.>`, bench `[reconnect]` settings) and
//! a bare async-nats client with default options (subscribed to `in.>`) run
//! side by side against one server. Each run: kill -9 the server, wait
//! a gap (2 to 4 s, a different one each run), start it again on the same port, and take the moment its port first
//! accepts a TCP connection (polled every millisecond) as zero. A fresh
//! publisher then sends a message every millisecond; the time to the first
//! message each of the two handles is its recovery time.
//!
//! Hung server: SIGSTOP the server and time how long until the gateway's
//! status says `reconnecting` (the supervisor gave up on the client after
//! `failure_threshold` failed probes), against `interval × threshold`. The
//! bare client rides along to show whether it notices at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wasmgate::{ConnectionState, Gateway};
use wasmgate_tests::{NatsServer, plugin};

use crate::stats::Sample;

pub struct Params {
    /// One run per gap between the kill and the restart. The bare client's
    /// result depends on where in its backoff schedule the restart falls, so
    /// the gaps are spread out.
    pub gaps: Vec<Duration>,
    pub hung_runs: usize,
}

/// The bench's `[reconnect]` and `[health]` settings.
fn gateway_config(server: &NatsServer) -> wasmgate::Config {
    let mut c = wasmgate::Config::default();
    c.nats.servers = vec![server.url()];
    c.nats.connect_timeout = Duration::from_millis(500);
    c.http.listen = String::new();
    c.reconnect.initial_backoff = Duration::from_millis(10);
    c.reconnect.max_backoff = Duration::from_millis(100);
    c.reconnect.backoff_factor = 2.0;
    c.reconnect.jitter = 0.2;
    c.reconnect.max_attempts = 0;
    c.reconnect.failure_threshold = 3;
    c.health.interval = Duration::from_millis(500);
    c.health.timeout = Duration::from_millis(250);
    c.plugins
        .push(plugin("echo", "echo", &["in.>"], &[("prefix", "out")]));
    c
}

fn settings(c: &wasmgate::Config) -> Value {
    json!({
        "reconnect.initial_backoff_ms": c.reconnect.initial_backoff.as_millis() as u64,
        "reconnect.max_backoff_ms": c.reconnect.max_backoff.as_millis() as u64,
        "reconnect.backoff_factor": c.reconnect.backoff_factor,
        "reconnect.jitter": c.reconnect.jitter,
        "reconnect.failure_threshold": c.reconnect.failure_threshold,
        "health.interval_ms": c.health.interval.as_millis() as u64,
        "health.timeout_ms": c.health.timeout.as_millis() as u64,
        "nats.connect_timeout_ms": c.nats.connect_timeout.as_millis() as u64,
    })
}

/// A bare async-nats client with default options, counting what it receives
/// and whether it ever noticed a disconnect.
struct Bare {
    _client: async_nats::Client,
    task: tokio::task::JoinHandle<()>,
    handled: Arc<AtomicU64>,
    disconnects: Arc<AtomicU64>,
}

impl Bare {
    async fn start(url: &str) -> anyhow::Result<Bare> {
        let handled = Arc::new(AtomicU64::new(0));
        let disconnects = Arc::new(AtomicU64::new(0));
        let d = disconnects.clone();
        let client = async_nats::ConnectOptions::new()
            .event_callback(move |e| {
                let d = d.clone();
                async move {
                    if let async_nats::Event::Disconnected = e {
                        d.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .connect(url)
            .await?;
        let mut sub = client.subscribe("in.>").await?;
        crate::child::sync_with_server(&client).await?;
        let h = handled.clone();
        let task = tokio::spawn(async move {
            while sub.next().await.is_some() {
                h.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(Bare {
            _client: client,
            task,
            handled,
            disconnects,
        })
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn run(p: &Params) -> anyhow::Result<Value> {
    let mut server = NatsServer::start();
    let config = gateway_config(&server);
    let used = settings(&config);
    let (interval, threshold, timeout) = (
        config.health.interval,
        config.reconnect.failure_threshold,
        config.health.timeout,
    );
    let shutdown = CancellationToken::new();
    let gw = Arc::new(Gateway::start(config, shutdown.clone()).await?);
    gw.ready(Duration::from_secs(20)).await?;
    let bare = Bare::start(&server.url()).await?;

    // --- kill -9 and restart ---
    let mut g_ms = Vec::new();
    let mut n_ms = Vec::new();
    let mut pub_ms = Vec::new();
    let mut trials = Vec::new();
    for (run, gap) in p.gaps.iter().copied().enumerate() {
        let g0 = gw.status().bindings[0].handled;
        let n0 = bare.handled.load(Ordering::Relaxed);
        server.kill();
        tokio::time::sleep(gap).await;
        let (s, open) = tokio::task::spawn_blocking(move || {
            let open = server.restart_timed();
            (server, open)
        })
        .await?;
        server = s;

        let stop = CancellationToken::new();
        let publisher = {
            let (url, stop) = (server.url(), stop.clone());
            tokio::spawn(async move {
                let nc = async_nats::ConnectOptions::new()
                    .retry_on_initial_connect()
                    .connect(url)
                    .await?;
                let connected = open.elapsed();
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                let mut i = 0u64;
                while !stop.is_cancelled() {
                    tick.tick().await;
                    i += 1;
                    nc.publish(format!("in.recovery.{i}"), "x".into()).await?;
                }
                anyhow::Ok(connected)
            })
        };

        // Poll both counters from a plain thread, every 200 µs.
        let (gwc, bh) = (gw.clone(), bare.handled.clone());
        let (tg, tn) = tokio::task::spawn_blocking(move || {
            let deadline = open + Duration::from_secs(20);
            let (mut tg, mut tn) = (None, None);
            while (tg.is_none() || tn.is_none()) && Instant::now() < deadline {
                if tg.is_none() && gwc.status().bindings[0].handled > g0 {
                    tg = Some(open.elapsed());
                }
                if tn.is_none() && bh.load(Ordering::Relaxed) > n0 {
                    tn = Some(open.elapsed());
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            (tg, tn)
        })
        .await?;
        stop.cancel();
        let connected = publisher.await??;
        let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        eprintln!(
            "  recovery run {} (restart {:.1} s after the kill): gateway {:.1} ms, bare client {:.1} ms (publisher connected after {:.1} ms)",
            run + 1,
            gap.as_secs_f64(),
            ms(tg),
            ms(tn),
            ms(Some(connected))
        );
        g_ms.push(ms(tg));
        n_ms.push(ms(tn));
        pub_ms.push(ms(Some(connected)));
        trials.push(json!({"run": run + 1, "gap_ms": gap.as_millis() as u64, "gateway_ms": ms(tg), "bare_client_ms": ms(tn), "publisher_connected_ms": ms(Some(connected))}));
        gw.wait_for(Duration::from_secs(20), |s| s.ready).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let gateway = Sample::new("ms", g_ms);
    let bare_s = Sample::new("ms", n_ms);
    eprintln!("  recovery gateway: {} (target < 250 ms)", gateway.show());
    eprintln!("  recovery bare client: {}", bare_s.show());
    let recovery = json!({
        "gaps_between_kill_and_restart_ms": p.gaps.iter().map(|g| g.as_millis() as u64).collect::<Vec<_>>(),
        "gateway": gateway,
        "bare_client": bare_s,
        "publisher_connected": Sample::new("ms", pub_ms),
        "target_ms": 250,
        "bare_client_options": "async-nats 0.51 defaults (first retry at once, then 2^(n-1) ms capped at 4 s)",
        "trials": trials,
    });

    // --- SIGSTOP ---
    let mut detect = Vec::new();
    let mut hung_trials = Vec::new();
    let mut bare_noticed = 0;
    let mut window = Duration::ZERO;
    for run in 0..p.hung_runs {
        let d0 = bare.disconnects.load(Ordering::Relaxed);
        let reconnects = gw.status().total_reconnects;
        server.pause();
        let paused = Instant::now();
        let seen = gw
            .wait_for(Duration::from_secs(30), |s| {
                s.state == ConnectionState::Reconnecting
            })
            .await;
        let detected = paused.elapsed();
        // Hold the pause a little longer, then see whether the bare client noticed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = paused.elapsed();
        window = window.max(held);
        let noticed = bare.disconnects.load(Ordering::Relaxed) > d0;
        bare_noticed += noticed as usize;
        server.resume();
        seen?;
        eprintln!(
            "  hung run {}: gateway reconnecting after {:.0} ms; bare client noticed within {:.1} s: {}",
            run + 1,
            detected.as_secs_f64() * 1e3,
            held.as_secs_f64(),
            noticed
        );
        detect.push(detected.as_secs_f64() * 1e3);
        hung_trials.push(json!({"run": run + 1, "gateway_ms": detected.as_secs_f64() * 1e3, "paused_for_ms": held.as_secs_f64() * 1e3, "bare_client_noticed": noticed}));
        gw.wait_for(Duration::from_secs(20), |s| {
            s.ready && s.total_reconnects > reconnects
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let target = (interval * threshold).as_secs_f64() * 1e3;
    let hung = Sample::new("ms", detect);
    eprintln!(
        "  hung gateway: {} (target interval x threshold = {target:.0} ms)",
        hung.show()
    );

    drop(bare);
    shutdown.cancel();
    let gw = Arc::try_unwrap(gw).map_err(|_| anyhow::anyhow!("gateway still shared"))?;
    gw.wait().await?;
    Ok(json!({
        "settings": used,
        "recovery": recovery,
        "hung": {
            "gateway": hung,
            "target_ms": target,
            "upper_bound_ms": (interval * threshold + timeout).as_secs_f64() * 1e3,
            "bare_client_noticed_runs": bare_noticed,
            "bare_client_window_ms": window.as_secs_f64() * 1e3,
            "bare_client_reference": "async-nats defaults (60 s ping interval, 2 missed pings): 179 s measured earlier (shared/notes/anchors.md)",
            "trials": hung_trials,
        }
    }))
}
