//! A small OTLP/HTTP trace receiver on a free loopback port, standing in for
//! a collector: it decodes what the gateway's exporter sends
//! (`POST /v1/traces`, protobuf) into [`ReceivedSpan`]s a test can look at,
//! or, for benchmarks, only counts the spans.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;

/// One span as the receiver got it: ids in lowercase hex, as in a
/// `traceparent`; `parent_span_id` is empty for a root span.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    /// OTLP's `SpanKind`: 5 is consumer.
    pub kind: i32,
    /// String, integer and boolean attributes, as text.
    pub attributes: Vec<(String, String)>,
    /// The `service.name` of the resource that sent it.
    pub service: Option<String>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    count: AtomicU64,
    requests: AtomicU64,
}

/// The receiver; it stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// A receiver that keeps every span it is sent.
    pub async fn start() -> OtlpReceiver {
        OtlpReceiver::serve(true).await
    }

    /// A receiver that only counts spans (a benchmark's collector).
    pub async fn counting() -> OtlpReceiver {
        OtlpReceiver::serve(false).await
    }

    async fn serve(keep: bool) -> OtlpReceiver {
        let received = Arc::new(Received::default());
        let state = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { accept(&state, keep, &headers, &body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver on loopback");
        let addr = listener.local_addr().expect("the receiver's address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        OtlpReceiver {
            addr,
            received,
            task,
        }
    }

    /// The base URL, for `[telemetry] otlp_endpoint` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span kept so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.spans.lock().expect("receiver lock").clone()
    }

    /// How many spans arrived, kept or not.
    pub fn count(&self) -> u64 {
        self.received.count.load(Ordering::Relaxed)
    }

    /// How many export requests arrived.
    pub fn requests(&self) -> u64 {
        self.received.requests.load(Ordering::Relaxed)
    }

    /// The spans named `name` once `done` holds for them; panics, saying
    /// what arrived, after [`crate::WAIT`].
    pub async fn wait_for(
        &self,
        name: &str,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        loop {
            let named: Vec<ReceivedSpan> = self
                .spans()
                .into_iter()
                .filter(|s| s.name == name)
                .collect();
            if done(&named) {
                return named;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the OTLP receiver did not get the expected {name:?} spans within {:?}; it got {} request(s) with: {:#?}",
                    crate::WAIT,
                    self.requests(),
                    self.spans()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The nesting of an export request down to its spans, each left encoded:
/// what a counting receiver reads (the fields it skips cost nothing), so
/// that counting costs little beside the gateway it measures.
#[derive(Clone, PartialEq, prost::Message)]
struct Nesting {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceNesting>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceNesting {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeNesting>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeNesting {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    spans: Vec<bytes::Bytes>,
}

fn accept(
    state: &Received,
    keep: bool,
    headers: &HeaderMap,
    body: &Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let protobuf = [(header::CONTENT_TYPE, "application/x-protobuf")];
    state.requests.fetch_add(1, Ordering::Relaxed);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/x-protobuf" {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, protobuf, Vec::new());
    }
    if !keep {
        let Ok(nesting) = Nesting::decode(body.clone()) else {
            return (StatusCode::BAD_REQUEST, protobuf, Vec::new());
        };
        let spans: usize = nesting
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        state.count.fetch_add(spans as u64, Ordering::Relaxed);
        return (StatusCode::OK, protobuf, Vec::new());
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
        return (StatusCode::BAD_REQUEST, protobuf, Vec::new());
    };
    let mut spans = Vec::new();
    for resource in request.resource_spans {
        let service = resource.resource.as_ref().and_then(|r| {
            r.attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
        });
        for scope in resource.scope_spans {
            for span in scope.spans {
                state.count.fetch_add(1, Ordering::Relaxed);
                spans.push(ReceivedSpan {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    attributes: span
                        .attributes
                        .iter()
                        .filter_map(|kv| {
                            let v = text(kv.value.as_ref()?.value.as_ref()?)?;
                            Some((kv.key.clone(), v))
                        })
                        .collect(),
                    service: service.clone(),
                });
            }
        }
    }
    state.spans.lock().expect("receiver lock").extend(spans);
    // An empty ExportTraceServiceResponse: every span accepted.
    (StatusCode::OK, protobuf, Vec::new())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
