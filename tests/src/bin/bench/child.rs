//! The load generator, run as a separate process (`bench loadgen ...`) so
//! that publishing and counting never share a process with the subscriber
//! under test.
//!
//! It connects a counter (subscribed to `--expect` with a buffer large enough
//! for every message), proves the server has that subscription with a round
//! trip, prints `READY`, then either publishes `--count` messages of `--size`
//! bytes to `--subject` from a second connection (core throughput) or only
//! counts (JetStream: the messages are already in a stream). It prints one
//! JSON line with what it saw, times relative to the start of publishing (or
//! to `READY` when it only counts).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;

#[derive(Debug, Default)]
pub struct Args {
    pub url: String,
    pub subject: Option<String>,
    pub count: u64,
    pub size: usize,
    pub expect: String,
    pub expect_n: u64,
    pub idle: Duration,
}

/// What the load generator saw; times in seconds from `t0`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Report {
    pub published: u64,
    pub publish_secs: f64,
    pub received: u64,
    pub first_secs: f64,
    pub last_secs: f64,
    pub slow_consumer_events: u64,
}

pub fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut a = Args {
        size: 128,
        idle: Duration::from_secs(3),
        ..Default::default()
    };
    while let Some(flag) = args.next() {
        let mut val = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = val()?,
            "--subject" => a.subject = Some(val()?),
            "--count" => a.count = val()?.parse()?,
            "--size" => a.size = val()?.parse()?,
            "--expect" => a.expect = val()?,
            "--expect-n" => a.expect_n = val()?.parse()?,
            "--idle-ms" => a.idle = Duration::from_millis(val()?.parse()?),
            other => anyhow::bail!("unknown loadgen flag {other}"),
        }
    }
    anyhow::ensure!(
        !a.url.is_empty() && !a.expect.is_empty(),
        "--url and --expect are required"
    );
    Ok(a)
}

/// A client with a subscription buffer for `capacity` messages, counting slow-consumer events.
pub async fn connect(
    url: &str,
    capacity: usize,
    slow: Arc<AtomicU64>,
) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .subscription_capacity(capacity)
        .event_callback(move |e| {
            let slow = slow.clone();
            async move {
                if let async_nats::Event::SlowConsumer(_) = e {
                    slow.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// One echo through the server on `client`'s own connection: every SUB sent
/// before it has been processed when it returns.
pub async fn sync_with_server(client: &async_nats::Client) -> anyhow::Result<()> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await?;
    client.publish(inbox, "sync".into()).await?;
    client.flush().await?;
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .context("no echo from the server")?
        .context("subscription closed")?;
    Ok(())
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let slow = Arc::new(AtomicU64::new(0));
    let expect_n = if a.expect_n > 0 { a.expect_n } else { a.count };
    let counter = connect(&a.url, (expect_n as usize + 1024).max(65_536), slow.clone()).await?;
    let mut sub = counter.subscribe(a.expect.clone()).await?;
    sync_with_server(&counter).await?;
    let publisher = match &a.subject {
        Some(_) => Some(connect(&a.url, 1024, slow.clone()).await?),
        None => None,
    };
    println!("READY");

    let t0 = Instant::now();
    let idle = a.idle;
    let count_task = tokio::spawn(async move {
        let (mut n, mut first, mut last) = (0u64, None, t0);
        // A generous wait for the first output (a JetStream consumer starts
        // up first); after that, `idle` without output ends the count.
        let mut wait = Duration::from_secs(60);
        while n < expect_n {
            match tokio::time::timeout(wait, sub.next()).await {
                Ok(Some(_)) => {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = now;
                    n += 1;
                    wait = idle;
                }
                _ => break,
            }
        }
        (n, first, last)
    });

    let mut publish_secs = 0.0;
    if let (Some(subject), Some(publisher)) = (&a.subject, &publisher) {
        let subject = async_nats::Subject::from(subject.as_str());
        let payload = bytes::Bytes::from(vec![b'x'; a.size]);
        for _ in 0..a.count {
            publisher.publish(subject.clone(), payload.clone()).await?;
        }
        publisher.flush().await?;
        publish_secs = t0.elapsed().as_secs_f64();
    }

    let (received, first, last) = count_task.await?;
    let report = Report {
        published: if a.subject.is_some() { a.count } else { 0 },
        publish_secs,
        received,
        first_secs: first.map_or(f64::NAN, |f| (f - t0).as_secs_f64()),
        last_secs: (last - t0).as_secs_f64(),
        slow_consumer_events: slow.load(Ordering::Relaxed),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The load generator's arguments for a throughput run: publish `count`
/// messages of `size` bytes to `subject` and count their outputs on
/// `out.<subject>`, until 3 s pass without one.
pub fn throughput_args(url: String, subject: &str, count: u64, size: usize) -> Vec<String> {
    vec![
        "--url".into(),
        url,
        "--subject".into(),
        subject.to_string(),
        "--count".into(),
        count.to_string(),
        "--size".into(),
        size.to_string(),
        "--expect".into(),
        format!("out.{subject}"),
        "--idle-ms".into(),
        "3000".into(),
    ]
}

/// The parent's side: spawn `bench loadgen` with `args`, wait for `READY`.
pub struct Child {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    pub async fn spawn(args: &[String]) -> anyhow::Result<Child> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe()?;
        let mut child = tokio::process::Command::new(exe)
            .arg("loadgen")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawning the load generator")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        match lines.next_line().await? {
            Some(l) if l == "READY" => {}
            other => anyhow::bail!("load generator did not start: {other:?}"),
        }
        Ok(Child { child, lines })
    }

    pub async fn report(mut self) -> anyhow::Result<Report> {
        let line = self
            .lines
            .next_line()
            .await?
            .context("load generator printed no report")?;
        let status = self.child.wait().await?;
        anyhow::ensure!(status.success(), "load generator failed: {status}");
        Ok(serde_json::from_str(&line)?)
    }
}
