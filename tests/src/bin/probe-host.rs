//! A minimal host for tests that need their own process (a controlled
//! environment, their own stdout and stderr): load one plugin from a config
//! file exactly as the gateway does, call `handle` once per payload, and
//! print each outcome on stdout as one line, `reply: <text>` (newlines
//! escaped as `\n`), `retry: …`, `reject: …` or `error: …`.
//!
//! Usage: `probe-host <config.toml> <plugin> <payload>...`

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use wasmgate::plugin::{Message, Outcome, Plugin, Runtime};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: probe-host <config.toml> <plugin> <payload>...";
    let config = args.next().context(usage)?;
    let name = args.next().context(usage)?;
    let config = wasmgate::Config::load(&config)?;
    let table = config
        .plugins
        .iter()
        .find(|p| p.name == name)
        .with_context(|| format!("no plugin {name:?} in the config"))?;
    let runtime = Runtime::from_config(&config.runtime)?;
    let plugin = Arc::new(Plugin::load(&runtime, table, 0)?);
    let mut instance = plugin.instantiate()?;
    let mut stdout = std::io::stdout();
    for payload in args {
        let msg = Message {
            subject: "probe".into(),
            payload: payload.into_bytes(),
            headers: vec![],
            reply_to: Some("_INBOX.probe".into()),
        };
        let line = match instance.handle(&msg) {
            Ok(handled) => match handled.outcome {
                Outcome::Ok(reply) => format!(
                    "reply: {}",
                    String::from_utf8_lossy(&reply.unwrap_or_default())
                ),
                Outcome::Retry(r) => format!("retry: {r}"),
                Outcome::Reject(r) => format!("reject: {r}"),
            },
            Err(e) => {
                let line = format!("error: {e}");
                instance = plugin.instantiate()?;
                line
            }
        };
        writeln!(stdout, "{}", line.replace('\n', "\\n"))?;
        stdout.flush()?;
    }
    Ok(())
}
