//! Trace export over OTLP/HTTP: which collector (from `[telemetry]
//! otlp_endpoint` or the standard `OTEL_*` variables), the OpenTelemetry
//! tracer provider that batches spans to it on its own thread, and the
//! `tracing` layer that turns the gateway's `message` spans into
//! OpenTelemetry spans. Off unless an endpoint is given.
//!
//! The binary installs the layer; an embedder adds [`Otlp::layer`] to its
//! own subscriber (or its own `tracing-opentelemetry` layer: the dispatch
//! code continues incoming traces through whichever is installed).
//!
//! Endpoints are plain `http://` URLs without credentials: a token belongs in
//! `OTEL_EXPORTER_OTLP_HEADERS`, which is sent and never logged. (The HTTP
//! client is built without TLS; send to a collector on the same host or
//! network, which forwards over TLS.)

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::config::TelemetryConfig;

/// The config key and the variables that name a collector, in the order
/// they are looked at (the first one set wins).
const CONFIG_KEY: &str = "telemetry.otlp_endpoint";
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";

/// What is wrong with the trace export settings, naming the key or variable.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("{key}: {reason}")]
    Setting { key: String, reason: String },
    #[error("cannot start the OTLP trace exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// A running OTLP trace export. Dropping it does not flush: call
/// [`Otlp::shutdown`] once the gateway has drained.
pub struct Otlp {
    provider: SdkTracerProvider,
    endpoint: String,
}

impl std::fmt::Debug for Otlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otlp")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Otlp {
    /// Start exporting when `[telemetry] otlp_endpoint` or the standard
    /// variables name a collector; `None` when nothing does, or when
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The rest of
    /// the `OTEL_*` variables (sampler, batching, headers, timeout, resource,
    /// service name) are read by the OpenTelemetry SDK as usual.
    pub fn from_config(config: &TelemetryConfig) -> Result<Option<Otlp>, OtlpError> {
        let Some(endpoint) = resolve(config, |name| std::env::var(name).ok())? else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint.url.clone())
            .with_protocol(endpoint.protocol)
            .build()
            .map_err(OtlpError::Exporter)?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build();
        Ok(Some(Otlp {
            provider,
            endpoint: endpoint.url,
        }))
    }

    /// Where spans go (a URL without credentials, safe to log).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `tracing` layer exporting the gateway's spans: every span of the
    /// gateway's own (whatever the log filter says) and the warnings and
    /// errors logged inside them, as span events.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let tracer = self.provider.tracer("wasmgate");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                if meta.is_span() {
                    meta.target().starts_with("wasmgate")
                } else {
                    *meta.level() <= tracing::Level::WARN
                }
            }))
    }

    /// Export what is queued now, waiting for the collector's answer.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "trace export failed");
        }
    }

    /// Export what is still queued (waiting at most `timeout`) and stop.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %e, "trace export did not finish");
        }
    }
}

/// The collector's traces URL and the encoding to send in.
#[derive(Debug, PartialEq)]
struct Endpoint {
    url: String,
    protocol: opentelemetry_otlp::Protocol,
}

/// Decide whether and where to export, from the config and `env`.
fn resolve(
    config: &TelemetryConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Endpoint>, OtlpError> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    let (key, url) = if !config.otlp_endpoint.is_empty() {
        (CONFIG_KEY, traces_url(&config.otlp_endpoint))
    } else if let Some(url) = set(TRACES_ENDPOINT) {
        (TRACES_ENDPOINT, url.trim().to_string())
    } else if let Some(base) = set(ENDPOINT) {
        (ENDPOINT, traces_url(base.trim()))
    } else {
        return Ok(None);
    };
    check_endpoint(&url).map_err(|reason| OtlpError::Setting {
        key: key.into(),
        reason,
    })?;
    let (key, protocol) = match set(TRACES_PROTOCOL) {
        Some(p) => (TRACES_PROTOCOL, p),
        None => (PROTOCOL, set(PROTOCOL).unwrap_or_default()),
    };
    let protocol = match protocol.trim() {
        "" | "http/protobuf" => opentelemetry_otlp::Protocol::HttpBinary,
        "http/json" => opentelemetry_otlp::Protocol::HttpJson,
        other => {
            return Err(OtlpError::Setting {
                key: key.into(),
                reason: format!(
                    "{other:?} is not supported: wasmgate exports over HTTP, as \"http/protobuf\" (the default) or \"http/json\""
                ),
            });
        }
    };
    Ok(Some(Endpoint { url, protocol }))
}

/// `base` + `/v1/traces`, as the OTLP spec builds a signal's URL from
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// A collector URL the exporter can use: `http://host[:port][/path]`,
/// without credentials (they would be logged with any error that names the
/// URL). The reason names what is wrong, without repeating a password.
pub(crate) fn check_endpoint(url: &str) -> Result<(), String> {
    let shown = crate::config::secrets::redact_url(url);
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("{shown:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{shown:?}: https is not supported by this build's OTLP client; send to a collector over http on the same host or network"
            ));
        }
        _ => return Err(format!("{shown:?} is not an http:// URL")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{shown:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "{shown:?}: credentials in the URL are refused (they would appear in logs); put them in OTEL_EXPORTER_OTLP_HEADERS"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("{shown:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!(
            "{:?}: a query string is refused (a token in it would appear in logs); put credentials in OTEL_EXPORTER_OTLP_HEADERS",
            shown.split('?').next().unwrap_or_default()
        ));
    }
    Ok(())
}

/// The SDK's resource (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`),
/// named `wasmgate` when neither names the service.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let unnamed = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    let builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if unnamed {
        builder.with_service_name("wasmgate").build()
    } else {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_otlp::Protocol;

    fn resolved(endpoint: &str, vars: &[(&str, &str)]) -> Result<Option<Endpoint>, OtlpError> {
        let config = TelemetryConfig {
            otlp_endpoint: endpoint.into(),
            ..TelemetryConfig::default()
        };
        resolve(&config, |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    fn url(endpoint: &str, vars: &[(&str, &str)]) -> Option<String> {
        resolved(endpoint, vars).unwrap().map(|e| e.url)
    }

    #[test]
    fn export_is_off_unless_something_names_a_collector() {
        assert_eq!(url("", &[]), None);
        assert_eq!(url("", &[("OTEL_SERVICE_NAME", "x")]), None);
    }

    #[test]
    fn the_config_key_wins_then_the_traces_variable_then_the_base_variable() {
        let both = [
            (TRACES_ENDPOINT, "http://traces:4318/custom"),
            (ENDPOINT, "http://base:4318"),
        ];
        assert_eq!(
            url("http://key:4318/", &both).as_deref(),
            Some("http://key:4318/v1/traces")
        );
        // The signal's own variable is used as it is, the base one gains the path.
        assert_eq!(url("", &both).as_deref(), Some("http://traces:4318/custom"));
        assert_eq!(
            url("", &both[1..]).as_deref(),
            Some("http://base:4318/v1/traces")
        );
    }

    #[test]
    fn the_standard_switches_turn_export_off() {
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(url("http://key:4318", &[off]), None, "{off:?}");
        }
        assert!(url("http://key:4318", &[("OTEL_SDK_DISABLED", "false")]).is_some());
    }

    #[test]
    fn protocols_other_than_http_are_refused_naming_the_variable() {
        let e = resolved("http://key:4318", &[(PROTOCOL, "grpc")]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL:") && text.contains("grpc"),
            "{text}"
        );
        let json = resolved("http://key:4318", &[(TRACES_PROTOCOL, "http/json")]).unwrap();
        assert_eq!(json.unwrap().protocol, Protocol::HttpJson);
        let default = resolved("http://key:4318", &[]).unwrap();
        assert_eq!(default.unwrap().protocol, Protocol::HttpBinary);
    }

    #[test]
    fn bad_endpoints_name_the_key_and_never_show_a_password() {
        for (endpoint, vars, key, says) in [
            ("not a url", &[][..], CONFIG_KEY, "not a URL"),
            ("https://c:4318", &[][..], CONFIG_KEY, "https"),
            ("ftp://c", &[][..], CONFIG_KEY, "http://"),
            (
                "http://c:4318/?api_key=hunter2",
                &[][..],
                CONFIG_KEY,
                "query string",
            ),
            (
                "http://u:hunter2@c:4318",
                &[][..],
                CONFIG_KEY,
                "credentials",
            ),
            (
                "",
                &[(ENDPOINT, "http://u:hunter2@c")][..],
                ENDPOINT,
                "credentials",
            ),
            (
                "",
                &[(TRACES_ENDPOINT, "/v1/traces")][..],
                TRACES_ENDPOINT,
                "http://",
            ),
        ] {
            let text = resolved(endpoint, vars).unwrap_err().to_string();
            assert!(text.starts_with(&format!("{key}:")), "{text}");
            assert!(text.contains(says), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}
