//! `wasmgate invoke`: run a handler once on one message, without NATS (or,
//! with `--nats URL`, with a connection for its requests only).
//!
//! The plugin is loaded and checked exactly as the gateway loads it (same
//! runtime, same host interfaces, no WASI grants, a deadline and a memory
//! limit), then `handle` runs once. Printed on stdout, in this order:
//!
//! ```text
//! log debug: in.x -> out.in.x (5 bytes)
//! publish out.in.x (5 bytes): "HELLO"
//!   header trace-id: 42
//! reply (5 bytes): "HELLO"
//! result: ok
//! ```
//!
//! Publishes are checked by the host as in the gateway (subject syntax, a
//! 1 MiB max payload like a default nats-server, at most 1024 per call). When
//! the handler does not return `ok`, its publishes are listed as `discarded`:
//! the gateway would not send them. The exit code follows the result (see
//! [`super::exit`]).
//!
//! A handler that makes requests (`requester`) needs a server: `--nats URL`
//! connects one client for them, and `--request-allow` grants subjects as
//! `request_allow` does in a `[[plugin]]` table. Without it a request fails
//! with `unavailable` and says so. Publishes are still only shown, never
//! sent.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use wasmgate::config::{ByteSize, ConfigValue, PluginConfig, RuntimeConfig};
use wasmgate::plugin::{CallError, Message, Outcome, Outgoing, Plugin, Runtime};

use super::{exit, parse_pair};

/// The max payload `invoke` enforces on publishes: a default nats-server's.
const MAX_PAYLOAD: usize = 1024 * 1024;

pub(super) const AFTER_HELP: &str = "\
Exit codes: 0 ok, 2 bad arguments, 3 the plugin cannot be loaded, 4 retry, 5 reject, 6 trap, 7 deadline exceeded.

Example:
  wasmgate invoke plugins/target/wasm32-wasip2/release/uppercase.wasm \\
      --subject in.greeting --payload 'hello' --header trace-id=42 --config prefix=up --reply-to inbox.1";

#[derive(Debug, Args)]
pub(super) struct InvokeArgs {
    /// The plugin component (`.wasm`).
    plugin: PathBuf,
    /// The message's subject.
    #[arg(long)]
    subject: String,
    /// The message's payload, as text.
    #[arg(long, conflicts_with = "payload_file", default_value = "")]
    payload: String,
    /// Read the payload from this file instead (bytes as they are).
    #[arg(long, value_name = "FILE")]
    payload_file: Option<PathBuf>,
    /// A message header; repeat for more (a name may repeat).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_pair)]
    headers: Vec<(String, String)>,
    /// A plugin config value, as `config = { ... }` in a `[[plugin]]` table; repeat for more.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_pair)]
    config: Vec<(String, String)>,
    /// The message's reply-to subject: the handler's reply is shown only with one.
    #[arg(long, value_name = "SUBJECT")]
    reply_to: Option<String>,
    /// Deadline of the call.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Linear-memory limit of the instance.
    #[arg(long, default_value = "64MiB")]
    memory: ByteSize,
    /// A NATS server for the handler's requests (publishes are never sent).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// A subject pattern the handler may request, as `request_allow`; repeat for more.
    #[arg(long = "request-allow", value_name = "PATTERN")]
    request_allow: Vec<String>,
}

/// Run the command; writes the report to `out`, problems to stderr; returns the exit code.
pub(super) fn run(args: &InvokeArgs, out: &mut dyn Write) -> u8 {
    match invoke(args, out) {
        Ok(code) => code,
        Err(Failure { code, message }) => {
            let _ = out.flush();
            eprintln!("error: {message}");
            code
        }
    }
}

struct Failure {
    code: u8,
    message: String,
}

fn usage(message: String) -> Failure {
    Failure {
        code: exit::USAGE,
        message,
    }
}

fn invoke(args: &InvokeArgs, out: &mut dyn Write) -> Result<u8, Failure> {
    wasmgate::subject::validate_publish(&args.subject)
        .map_err(|e| usage(format!("--subject: {e}")))?;
    if let Some(reply_to) = &args.reply_to {
        wasmgate::subject::validate_publish(reply_to)
            .map_err(|e| usage(format!("--reply-to: {e}")))?;
    }
    if args.timeout.is_zero() {
        return Err(usage("--timeout: must be greater than zero".into()));
    }
    let payload = match &args.payload_file {
        Some(file) => std::fs::read(file)
            .map_err(|e| usage(format!("--payload-file {}: {e}", file.display())))?,
        None => args.payload.clone().into_bytes(),
    };

    for pattern in &args.request_allow {
        wasmgate::subject::validate_filter(pattern)
            .map_err(|e| usage(format!("--request-allow {pattern:?}: {e}")))?;
        if wasmgate::grants::names_settlement(pattern) {
            return Err(usage(format!(
                "--request-allow {pattern:?}: names JetStream acknowledgements, which only the host sends"
            )));
        }
    }
    let name = plugin_name(&args.plugin);
    let config = PluginConfig {
        config: args
            .config
            .iter()
            .map(|(k, v)| (k.clone(), ConfigValue::String(v.clone())))
            .collect(),
        timeout: args.timeout,
        memory: args.memory,
        request_allow: args.request_allow.clone(),
        ..PluginConfig::new(name, args.plugin.clone())
    };
    // The connection's tasks run on a runtime of their own; the call stays
    // on this thread, which the request blocks.
    let nats = match &args.nats {
        None => None,
        Some(url) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| Failure {
                    code: exit::FAILURE,
                    message: format!("starting a runtime for --nats: {e}"),
                })?;
            let client = rt
                .block_on(
                    async_nats::ConnectOptions::new()
                        .connection_timeout(Duration::from_secs(5))
                        .connect(url.as_str()),
                )
                .map_err(|e| Failure {
                    code: exit::FAILURE,
                    message: format!(
                        "--nats {}: cannot connect: {e}",
                        wasmgate::config::redact_url(url)
                    ),
                })?;
            Some((rt, client))
        }
    };
    // The default compile cache: a Python or JavaScript component compiles once.
    let runtime = Runtime::from_config(&RuntimeConfig::default()).map_err(|e| Failure {
        code: exit::FAILURE,
        message: format!("starting the WebAssembly runtime: {e:#}"),
    })?;
    let loaded = match &nats {
        None => Plugin::load(&runtime, &config, MAX_PAYLOAD),
        Some((rt, client)) => {
            let max = client.server_info().max_payload;
            Plugin::load_connected(&runtime, &config, max, client.clone(), rt.handle().clone())
        }
    };
    let plugin = loaded.map_err(|e| Failure {
        code: exit::LOAD,
        message: e.to_string(),
    })?;
    let plugin = Arc::new(plugin);

    let msg = Message {
        subject: args.subject.clone(),
        payload,
        headers: args.headers.clone(),
        reply_to: args.reply_to.clone(),
    };
    let mut instance = match plugin.instantiate() {
        Ok(instance) => instance,
        Err(e) => {
            let _ = writeln!(out, "result: trap: {e}");
            return Ok(exit::TRAP);
        }
    };
    instance.capture_logs();
    let result = instance.handle(&msg);
    for (level, line) in instance.take_logs() {
        let _ = writeln!(out, "log {level}: {line}");
    }
    let code = match result {
        Ok(handled) => {
            let ok = matches!(handled.outcome, Outcome::Ok(_));
            for o in &handled.outbox {
                write_publish(out, o, ok);
            }
            match handled.outcome {
                Outcome::Ok(reply) => {
                    match (reply, &args.reply_to) {
                        (Some(reply), Some(_)) => {
                            let _ = writeln!(out, "reply {}", describe_payload(&reply));
                        }
                        (Some(reply), None) => {
                            let _ = writeln!(
                                out,
                                "reply: none (the handler returned {} bytes; the message has no reply-to)",
                                reply.len()
                            );
                        }
                        (None, _) => {
                            let _ = writeln!(out, "reply: none");
                        }
                    }
                    let _ = writeln!(out, "result: ok");
                    exit::OK
                }
                Outcome::Retry(reason) => {
                    let _ = writeln!(out, "result: retry: {reason}");
                    exit::RETRY
                }
                Outcome::Reject(reason) => {
                    let _ = writeln!(out, "result: reject: {reason}");
                    exit::REJECT
                }
            }
        }
        Err(CallError::Timeout(d)) => {
            let _ = writeln!(
                out,
                "result: timeout: handler exceeded its {} deadline and was interrupted",
                humantime::format_duration(d)
            );
            exit::TIMEOUT
        }
        Err(e) => {
            let _ = writeln!(out, "result: trap: {e}");
            exit::TRAP
        }
    };
    let _ = out.flush();
    Ok(code)
}

/// The plugin's name in messages: the file stem, made a valid plugin name.
fn plugin_name(path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "plugin".into()
    } else {
        name
    }
}

fn write_publish(out: &mut dyn Write, o: &Outgoing, sent: bool) {
    let verb = if sent { "publish" } else { "discarded publish" };
    let _ = writeln!(out, "{verb} {} {}", o.subject, describe_payload(&o.payload));
    for (k, v) in &o.headers {
        let _ = writeln!(out, "  header {k}: {v}");
    }
}

/// `(5 bytes): "HELLO"` for UTF-8, `(3 bytes): hex 00ff10` otherwise.
fn describe_payload(bytes: &[u8]) -> String {
    let n = bytes.len();
    let unit = if n == 1 { "byte" } else { "bytes" };
    match std::str::from_utf8(bytes) {
        Ok(text) => format!("({n} {unit}): {text:?}"),
        Err(_) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("({n} {unit}): hex {hex}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_shown_as_text_or_hex() {
        assert_eq!(describe_payload(b"HI"), "(2 bytes): \"HI\"");
        assert_eq!(describe_payload(b"a\nb"), "(3 bytes): \"a\\nb\"");
        assert_eq!(describe_payload(&[0xff, 0]), "(2 bytes): hex ff00");
        assert_eq!(describe_payload(b"x"), "(1 byte): \"x\"");
    }

    #[test]
    fn plugin_names_come_from_the_file_stem() {
        assert_eq!(
            plugin_name("a/b/js_uppercase.wasm".as_ref()),
            "js_uppercase"
        );
        assert_eq!(plugin_name("my plugin.wasm".as_ref()), "my_plugin");
        assert_eq!(plugin_name("".as_ref()), "plugin");
    }
}
