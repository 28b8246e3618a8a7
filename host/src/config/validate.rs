//! Checking a parsed config for what serde's types cannot express: ranges,
//! names, subjects, addresses, settings that only make sense together, and
//! paths that must exist. Every problem is collected, keyed by its dotted
//! path, so one run of `wasmgate check` or one failed start lists them all.

use std::collections::HashSet;

use super::{
    BindingConfig, Config, ConfigError, JetStreamConfig, NatsConfig, Overload, PluginConfig,
    Problem, ReconnectConfig, WasiConfig,
};
use crate::subject;

/// The problems found so far, in the order the keys appear in the file.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn bad(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }

    fn positive(&mut self, key: impl Into<String>, zero: bool) {
        if zero {
            self.bad(key, "must be greater than zero");
        }
    }
}

impl Config {
    /// Check every value that serde's types cannot, reporting all problems at once.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        nats(&self.nats, &mut p);
        p.positive("health.interval", self.health.interval.is_zero());
        p.positive("health.timeout", self.health.timeout.is_zero());
        reconnect(&self.reconnect, &mut p);
        self.http_and_runtime(&mut p);

        let mut names = HashSet::new();
        for (i, plugin) in self.plugins.iter().enumerate() {
            let at = if plugin.name.is_empty() {
                format!("plugin[{i}]")
            } else {
                format!("plugin[{i}] ({})", plugin.name)
            };
            self::plugin(plugin, &at, &mut names, &mut p);
        }

        if p.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: origin.to_string(),
                problems: p.0,
            })
        }
    }

    /// What a valid config grants that an operator should look at: one line
    /// per unrestricted or reserved-namespace grant, naming the plugin
    /// (`wasmgate check` prints them, `run` logs them).
    pub fn warnings(&self) -> Vec<String> {
        self.plugins
            .iter()
            .flat_map(|plugin| {
                crate::grants::warnings("publish_allow", &plugin.publish_allow)
                    .into_iter()
                    .chain(crate::grants::warnings(
                        "request_allow",
                        &plugin.request_allow,
                    ))
                    .map(move |w| format!("plugin {:?}: warning: {w}", plugin.name))
            })
            .collect()
    }

    fn http_and_runtime(&self, p: &mut Problems) {
        let listen = &self.http.listen;
        if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
            p.bad(
                "http.listen",
                format!("{listen:?} is not an address like 127.0.0.1:8480"),
            );
        }
        let otlp = &self.telemetry.otlp_endpoint;
        if !otlp.is_empty()
            && let Err(reason) = crate::otel::check_endpoint(otlp)
        {
            p.bad("telemetry.otlp_endpoint", reason);
        }
        let rt = &self.runtime;
        p.positive("runtime.epoch_tick", rt.epoch_tick.is_zero());
        if rt.overload == Overload::Shed && rt.admission_wait.is_zero() {
            p.bad(
                "runtime.admission_wait",
                "must be greater than zero with overload = \"shed\"",
            );
        }
        if let Some(dir) = rt.cache_dir()
            && dir.exists()
            && !dir.is_dir()
        {
            p.bad(
                "runtime.cache_dir",
                format!("{} exists and is not a directory", dir.display()),
            );
        }
    }
}

fn nats(n: &NatsConfig, p: &mut Problems) {
    if n.servers.is_empty() {
        p.bad("nats.servers", "at least one server is required");
    }
    for (i, server) in n.servers.iter().enumerate() {
        if let Err(e) = server.parse::<async_nats::ServerAddr>() {
            let shown = super::secrets::redact_url(server);
            p.bad(
                format!("nats.servers[{i}]"),
                format!("{shown:?} is not a server URL: {e}"),
            );
        }
    }
    p.positive("nats.connect_timeout", n.connect_timeout.is_zero());
    p.positive("nats.subscription_capacity", n.subscription_capacity == 0);
    min_buffer("nats.binding_buffer", n.binding_buffer, p);
    min_buffer("nats.buffer_limit", n.buffer_limit, p);
    let a = &n.auth;
    let methods = [
        a.creds_file.is_some(),
        a.nkey_seed.is_some(),
        a.token.is_some(),
        a.user.is_some() || a.password.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        p.bad(
            "nats.auth",
            "set only one of creds_file, nkey_seed, token, or user + password",
        );
    }
    if a.user.is_some() != a.password.is_some() {
        p.bad("nats.auth", "user and password go together");
    }
    if n.tls.cert.is_some() != n.tls.key.is_some() {
        p.bad("nats.tls", "cert and key go together");
    }
    credentials(n, p);
}

/// The files and keys `[nats.auth]` and `[nats.tls]` name exist and look
/// like what they should be, so a typo is found by `config validate` rather
/// than by a failed connect. Never prints a secret.
fn credentials(n: &NatsConfig, p: &mut Problems) {
    let a = &n.auth;
    if let Some(seed) = &a.nkey_seed
        && let Err(e) = nkeys::KeyPair::from_seed(seed.expose())
    {
        p.bad(
            "nats.auth.nkey_seed",
            format!("is not an nkey seed (expected `SU...`): {e}"),
        );
    }
    if a.token.as_ref().is_some_and(|t| t.expose().is_empty()) {
        p.bad("nats.auth.token", "is empty");
    }
    if a.user.as_ref().is_some_and(|u| u.is_empty()) {
        p.bad("nats.auth.user", "is empty");
    }
    let files = [
        (
            "nats.auth.creds_file",
            &a.creds_file,
            &["NATS USER JWT", "USER NKEY SEED"][..],
        ),
        ("nats.tls.ca", &n.tls.ca, &["CERTIFICATE"][..]),
        ("nats.tls.cert", &n.tls.cert, &["CERTIFICATE"][..]),
        ("nats.tls.key", &n.tls.key, &["PRIVATE KEY"][..]),
    ];
    for (key, path, sections) in files {
        let Some(path) = path else { continue };
        match std::fs::read_to_string(path) {
            Err(e) => p.bad(key, format!("{}: {e}", path.display())),
            Ok(text) => {
                if let Some(missing) = sections.iter().find(|s| !text.contains(*s)) {
                    p.bad(key, format!("{}: has no {missing} section", path.display()));
                }
            }
        }
    }
}

fn reconnect(r: &ReconnectConfig, p: &mut Problems) {
    p.positive("reconnect.initial_backoff", r.initial_backoff.is_zero());
    if r.max_backoff < r.initial_backoff {
        p.bad(
            "reconnect.max_backoff",
            format!(
                "{} is less than initial_backoff ({})",
                humantime::format_duration(r.max_backoff),
                humantime::format_duration(r.initial_backoff)
            ),
        );
    }
    if !(r.backoff_factor.is_finite() && r.backoff_factor >= 1.0) {
        p.bad(
            "reconnect.backoff_factor",
            format!("{} must be at least 1.0", r.backoff_factor),
        );
    }
    if !(0.0..=1.0).contains(&r.jitter) {
        p.bad(
            "reconnect.jitter",
            format!("{} must be between 0.0 and 1.0", r.jitter),
        );
    }
    if r.failure_threshold == 0 {
        p.bad("reconnect.failure_threshold", "must be at least 1");
    }
}

/// One `[[plugin]]` table; `at` is its key prefix, e.g. `plugin[0] (echo)`,
/// and `names` the plugin names seen before it.
fn plugin<'a>(plugin: &'a PluginConfig, at: &str, names: &mut HashSet<&'a str>, p: &mut Problems) {
    let name = &plugin.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        p.bad(
            format!("{at}.name"),
            format!("{name:?} must be non-empty letters, digits, '-' or '_'"),
        );
    } else if !names.insert(name) {
        p.bad(
            format!("{at}.name"),
            format!("{name:?} is used by another plugin"),
        );
    }
    if plugin.path.as_os_str().is_empty() {
        p.bad(format!("{at}.path"), "is empty");
    }
    p.positive(format!("{at}.timeout"), plugin.timeout.is_zero());
    if plugin.memory.as_u64() < 64 * 1024 {
        p.bad(
            format!("{at}.memory"),
            format!("{} is below one 64 KiB page", plugin.memory),
        );
    }
    if !(1..=256).contains(&plugin.concurrency) {
        p.bad(
            format!("{at}.concurrency"),
            format!("{} must be between 1 and 256", plugin.concurrency),
        );
    }
    for (key, grant) in [
        ("publish_allow", &plugin.publish_allow),
        ("request_allow", &plugin.request_allow),
    ] {
        for (j, pattern) in grant.iter().enumerate() {
            if let Err(e) = subject::validate_filter(pattern) {
                p.bad(format!("{at}.{key}[{j}]"), e.to_string());
            } else if crate::grants::names_settlement(pattern) {
                p.bad(
                    format!("{at}.{key}[{j}]"),
                    format!(
                        "{pattern:?} names JetStream acknowledgements, which only the host sends \
                         (a handler settles its message by its result)"
                    ),
                );
            }
        }
    }
    wasi(&plugin.wasi, &format!("{at}.wasi"), p);
    if plugin.bindings.is_empty() {
        p.bad(
            format!("{at}.binding"),
            "a plugin needs at least one [[plugin.binding]]",
        );
    }
    for (j, b) in plugin.bindings.iter().enumerate() {
        binding(b, &format!("{at}.binding[{j}]"), p);
    }
}

fn binding(b: &BindingConfig, at: &str, p: &mut Problems) {
    if let Err(e) = subject::validate_filter(&b.subject) {
        p.bad(format!("{at}.subject"), e.to_string());
    }
    if let Some(q) = &b.queue
        && let Err(e) = subject::validate_queue(q)
    {
        p.bad(format!("{at}.queue"), e);
    }
    if let Some(js) = &b.jetstream {
        if b.queue.is_some() {
            p.bad(
                format!("{at}.queue"),
                "a JetStream binding shares work through its durable consumer, not a queue group",
            );
        }
        if b.buffer.is_some() {
            p.bad(
                format!("{at}.buffer"),
                "a JetStream binding holds only what it pulls (max_ack_pending, pull_batch); `buffer` is for core bindings",
            );
        }
        jetstream(js, &format!("{at}.jetstream"), p);
    }
    if let Some(size) = b.buffer {
        min_buffer(&format!("{at}.buffer"), size, p);
    }
}

/// A buffer must hold at least one message of the largest size a server
/// lets a client publish by default (1 MiB), or such a message could never
/// be taken.
fn min_buffer(key: &str, size: bytesize::ByteSize, p: &mut Problems) {
    if size < bytesize::ByteSize::mib(1) {
        p.bad(key, format!("{size} cannot hold one message of 1 MiB (the default max_payload); give at least 1MiB"));
    }
}

fn jetstream(js: &JetStreamConfig, at: &str, p: &mut Problems) {
    let key = |k: &str| format!("{at}.{k}");
    for (k, name) in [("stream", &js.stream), ("consumer", &js.consumer)] {
        if name.is_empty()
            || name
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        {
            p.bad(
                key(k),
                format!(
                    "{name:?} must be non-empty, without whitespace, '.', '*', '>', '/' or '\\'"
                ),
            );
        }
    }
    for (n, s) in js.stream_subjects.iter().enumerate() {
        if let Err(e) = subject::validate_filter(s) {
            p.bad(key(&format!("stream_subjects[{n}]")), e.to_string());
        }
    }
    p.positive(key("ack_wait"), js.ack_wait.is_zero());
    if !(1..=5).contains(&js.replicas) {
        p.bad(
            key("replicas"),
            format!("{} must be between 1 and 5", js.replicas),
        );
    }
    if js.max_ack_pending == 0 {
        p.bad(key("max_ack_pending"), "must be at least 1");
    }
    if js.pull_batch == 0 {
        p.bad(key("pull_batch"), "must be at least 1");
    }
    p.positive(key("heartbeat"), js.heartbeat.is_zero());
    if let Some(dl) = &js.dead_letter
        && let Err(e) = subject::validate_publish(dl)
    {
        p.bad(key("dead_letter"), e.to_string());
    }
}

/// `[plugin.wasi]`: well-formed, unique variable names; existing host
/// directories at unique, absolute guest paths.
fn wasi(w: &WasiConfig, at: &str, p: &mut Problems) {
    let mut names = HashSet::new();
    for (i, name) in w.env.iter().enumerate() {
        let key = format!("{at}.env[{i}]");
        if name.is_empty() || name.contains(['=', '\0']) {
            p.bad(
                key,
                format!("{name:?} is not an environment variable name (empty, '=' or NUL)"),
            );
        } else if !names.insert(name.as_str()) {
            p.bad(key, format!("{name:?} is listed twice"));
        }
    }
    let mut guests = HashSet::new();
    for (i, preopen) in w.preopen.iter().enumerate() {
        let key = format!("{at}.preopen[{i}]");
        let host = &preopen.host;
        if host.as_os_str().is_empty() {
            p.bad(format!("{key}.host"), "is empty");
        } else if !host.exists() {
            p.bad(
                format!("{key}.host"),
                format!("{}: no such directory", host.display()),
            );
        } else if !host.is_dir() {
            p.bad(
                format!("{key}.host"),
                format!("{} is not a directory", host.display()),
            );
        }
        let guest = preopen.guest.as_str();
        if !guest.starts_with('/')
            || guest
                .split('/')
                .skip(1)
                .any(|c| c == "." || c == ".." || (c.is_empty() && guest != "/"))
            || guest.contains('\0')
        {
            p.bad(
                format!("{key}.guest"),
                format!(
                    "{guest:?} must be an absolute guest path like \"/data\" (no empty, '.' or '..' parts)"
                ),
            );
        } else if !guests.insert(guest) {
            p.bad(
                format!("{key}.guest"),
                format!("{guest:?} is used by another preopen"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::*;

    #[test]
    fn reports_every_problem_at_once() {
        let err = Config::parse(
            "[reconnect]\nbackoff_factor = 0.5\njitter = 2.0\nfailure_threshold = 0\n",
            "t.toml",
        )
        .unwrap_err();
        match err {
            ConfigError::Invalid { problems, .. } => {
                let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
                assert_eq!(
                    keys,
                    [
                        "reconnect.backoff_factor",
                        "reconnect.jitter",
                        "reconnect.failure_threshold"
                    ]
                );
            }
            other => panic!("expected Invalid, got {other}"),
        }
    }
}
