//! The client half of `scripts/demo.sh`: waits for a running gateway to be
//! ready, sends a message and a request through the uppercase plugin, and
//! prints what came back and the gateway's status.
//!
//! Usage: `demo-client <nats-url> <http-addr>`

use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .context("usage: demo-client <nats-url> <http-addr>")?;
    let http = args
        .next()
        .context("usage: demo-client <nats-url> <http-addr>")?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = reqwest::get(format!("http://{http}/readyz")).await;
        if matches!(&ready, Ok(r) if r.status() == 200) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the gateway at {http} did not become ready in 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("gateway ready: GET http://{http}/readyz -> 200");

    let nc = async_nats::connect(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let mut out = nc.subscribe("out.>").await?;
    nc.flush().await?;

    let payload = "hello from wasmgate";
    nc.publish("demo.hello", payload.into()).await?;
    let msg = tokio::time::timeout(Duration::from_secs(5), out.next())
        .await
        .context("no output from the plugin within 5s")?
        .context("subscription closed")?;
    println!(
        "published demo.hello {payload:?}  ->  plugin published {} {:?}",
        msg.subject,
        String::from_utf8_lossy(&msg.payload)
    );

    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        nc.request("demo.ask", "is anybody there?".into()),
    )
    .await
    .context("no reply within 5s")??;
    println!(
        "request demo.ask \"is anybody there?\"  ->  reply {:?}",
        String::from_utf8_lossy(&reply.payload)
    );

    let status: serde_json::Value = reqwest::get(format!("http://{http}/status"))
        .await?
        .json()
        .await?;
    println!(
        "GET http://{http}/status:\n{}",
        serde_json::to_string_pretty(&status)?
    );
    Ok(())
}
