//! W3C trace context through a handled message: read from the message's
//! `traceparent`/`tracestate` headers, continued by its `message` span, and
//! stamped on everything the plugin sends because of it (publishes and the
//! reply), replacing a context the plugin copied from its input.
//!
//! With an OpenTelemetry layer installed, the incoming context becomes the
//! span's parent and the outputs carry the span's own context, its child.
//! Without one, the outputs carry the incoming context unchanged, so a trace
//! stays whole across a gateway that exports nothing. A message without
//! (valid) context costs nothing here unless spans are exported, when its
//! span starts a trace and the outputs carry that.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::runtime::Outgoing;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
/// The longest `tracestate` carried on. The sender chose it and every output
/// of the message repeats it (up to 1,024 publishes): W3C asks participants
/// to carry at least 512 characters and lets them drop a longer one.
const MAX_TRACESTATE: usize = 512;
/// `00-` + 32 hex digits + `-` + 16 + `-` + 2.
const VERSION_00_LEN: usize = 55;

/// The trace context a message's outputs carry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Carried {
    traceparent: String,
    tracestate: Option<String>,
}

impl Carried {
    /// Continue the trace of a message with `headers` in `span`, which is
    /// not entered yet (entering starts an OpenTelemetry span, after which
    /// its parent is fixed). `None`: nothing to carry.
    pub(super) fn start(span: &tracing::Span, headers: Option<&HeaderMap>) -> Option<Carried> {
        let incoming = headers.and_then(Carried::read);
        if span.is_disabled() {
            return incoming;
        }
        let propagator = TraceContextPropagator::new();
        if let Some(c) = &incoming {
            // An error means no OpenTelemetry layer: the context passes through.
            let _ = span.set_parent(propagator.extract(c));
        }
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return incoming;
        }
        let mut own = Carried::default();
        propagator.inject_context(&cx, &mut own);
        if own.traceparent.is_empty() {
            incoming
        } else {
            Some(own)
        }
    }

    /// The context in `headers`, when its `traceparent` is well formed (a
    /// name in any case, as a bridge from HTTP may capitalise it).
    fn read(headers: &HeaderMap) -> Option<Carried> {
        let value = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| AsRef::<str>::as_ref(k).eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.first())
                .map(|v| v.as_str())
        };
        let traceparent = value(TRACEPARENT)?.trim();
        if !well_formed(traceparent) {
            return None;
        }
        let carried = Carried {
            traceparent: traceparent.to_string(),
            tracestate: value(TRACESTATE)
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE)
                .filter(|s| s.parse::<opentelemetry::trace::TraceState>().is_ok())
                .map(str::to_string),
        };
        let propagator = TraceContextPropagator::new();
        let cx = propagator.extract(&carried);
        if !cx.span().span_context().is_valid() {
            return None;
        }
        if carried.traceparent.len() == VERSION_00_LEN {
            return Some(carried);
        }
        // A later version, which may be longer: carried on as version 00.
        let mut normal = Carried::default();
        propagator.inject_context(&cx, &mut normal);
        normal.tracestate = carried.tracestate;
        Some(normal)
    }

    /// `o` with this context in its headers, instead of any it had.
    pub(super) fn stamp(&self, mut o: Outgoing) -> Outgoing {
        o.headers.retain(|(k, _)| {
            !k.eq_ignore_ascii_case(TRACEPARENT) && !k.eq_ignore_ascii_case(TRACESTATE)
        });
        o.headers
            .push((TRACEPARENT.to_string(), self.traceparent.clone()));
        if let Some(state) = &self.tracestate {
            o.headers.push((TRACESTATE.to_string(), state.clone()));
        }
        o
    }

    /// The headers of a reply carrying this context.
    pub(super) fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, self.traceparent.as_str());
        if let Some(state) = &self.tracestate {
            h.insert(TRACESTATE, state.as_str());
        }
        h
    }
}

/// W3C's `traceparent` grammar, which the SDK's parser is looser about (it
/// takes short ids, a `+`, capitals): `version-trace-parent-flags` in
/// lowercase hex of 2, 32, 16 and 2 digits, version `ff` invalid, and for a
/// later version anything more after a `-`.
fn well_formed(tp: &str) -> bool {
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let b = tp.as_bytes();
    if b.len() < VERSION_00_LEN || !tp.is_char_boundary(VERSION_00_LEN) {
        return false;
    }
    let (head, rest) = tp.split_at(VERSION_00_LEN);
    let version = &head[..2];
    let shape = b[2] == b'-' && b[35] == b'-' && b[52] == b'-';
    shape
        && hex(version)
        && version != "ff"
        && hex(&head[3..35])
        && hex(&head[36..52])
        && hex(&head[53..55])
        && if version == "00" {
            rest.is_empty()
        } else {
            rest.is_empty() || rest.starts_with('-')
        }
}

impl Extractor for Carried {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(&self.traceparent),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys = vec![TRACEPARENT];
        if self.tracestate.is_some() {
            keys.push(TRACESTATE);
        }
        keys
    }
}

impl Injector for Carried {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = value,
            // The propagator writes an empty state when there is none.
            TRACESTATE if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    }

    fn outgoing(headers: &[(&str, &str)]) -> Outgoing {
        Outgoing {
            subject: "out".into(),
            payload: Default::default(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn without_a_layer_the_incoming_context_passes_through_unchanged() {
        let h = headers(&[(TRACEPARENT, PARENT), (TRACESTATE, "congo=t61rcWkgMzE")]);
        let span = tracing::Span::none();
        let carried = Carried::start(&span, Some(&h)).expect("a valid context");
        assert_eq!(carried.traceparent, PARENT);
        assert_eq!(carried.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    }

    #[test]
    fn a_tracestate_longer_than_512_bytes_is_dropped_and_the_parent_kept() {
        let long = format!("k={}", "v".repeat(MAX_TRACESTATE));
        let h = headers(&[(TRACEPARENT, PARENT), (TRACESTATE, long.as_str())]);
        let carried = Carried::start(&tracing::Span::none(), Some(&h)).expect("a context");
        assert_eq!(carried.traceparent, PARENT);
        assert_eq!(carried.tracestate, None);
        // Two members of 252 bytes (a value is at most 256 characters).
        let fits = format!("a={},b={}", "v".repeat(250), "v".repeat(250));
        assert!(fits.len() <= MAX_TRACESTATE);
        let h = headers(&[(TRACEPARENT, PARENT), (TRACESTATE, fits.as_str())]);
        let carried = Carried::start(&tracing::Span::none(), Some(&h)).expect("a context");
        assert_eq!(carried.tracestate.as_deref(), Some(fits.as_str()));
    }

    #[test]
    fn a_malformed_tracestate_is_dropped_and_the_parent_kept() {
        let h = headers(&[(TRACEPARENT, PARENT), (TRACESTATE, "no equals sign,,=")]);
        let carried = Carried::start(&tracing::Span::none(), Some(&h)).expect("a context");
        assert_eq!(carried.tracestate, None);
    }

    #[test]
    fn a_later_version_is_carried_on_as_version_00() {
        let later = format!(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-{}",
            "x".repeat(4096)
        );
        let h = headers(&[(TRACEPARENT, later.as_str())]);
        let carried = Carried::start(&tracing::Span::none(), Some(&h)).expect("a context");
        assert_eq!(carried.traceparent, PARENT);
    }

    #[test]
    fn a_capitalised_header_name_is_read_and_a_malformed_context_is_not() {
        let h = headers(&[("Traceparent", PARENT)]);
        assert!(Carried::start(&tracing::Span::none(), Some(&h)).is_some());
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-1-2-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01extra",
            "not a traceparent",
            "",
        ] {
            let h = headers(&[(TRACEPARENT, bad)]);
            assert_eq!(
                Carried::start(&tracing::Span::none(), Some(&h)),
                None,
                "{bad}"
            );
        }
        assert_eq!(Carried::start(&tracing::Span::none(), None), None);
    }

    #[test]
    fn a_stamped_publish_carries_the_context_instead_of_a_copied_one() {
        let carried = Carried {
            traceparent: PARENT.into(),
            tracestate: None,
        };
        let o = carried.stamp(outgoing(&[
            (
                "Traceparent",
                "00-11111111111111111111111111111111-2222222222222222-01",
            ),
            ("tracestate", "old=1"),
            ("kept", "yes"),
        ]));
        assert_eq!(
            o.headers,
            vec![
                ("kept".to_string(), "yes".to_string()),
                (TRACEPARENT.to_string(), PARENT.to_string()),
            ]
        );
        let reply = carried.headers();
        assert_eq!(reply.get(TRACEPARENT).map(|v| v.as_str()), Some(PARENT));
        assert!(reply.get(TRACESTATE).is_none());
    }

    #[test]
    fn with_a_layer_the_span_continues_the_trace_and_the_outputs_carry_its_child() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::debug_span!("message");
            let h = headers(&[(TRACEPARENT, PARENT)]);
            let carried = Carried::start(&span, Some(&h)).expect("a context");
            let parts: Vec<&str> = carried.traceparent.split('-').collect();
            assert_eq!(parts.len(), 4, "{}", carried.traceparent);
            assert_eq!(
                parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
                "the same trace"
            );
            assert_ne!(
                parts[2], "00f067aa0ba902b7",
                "the span's own id, not its parent's"
            );
            assert_eq!(parts[3], "01");

            // No context in: the span starts a trace, and the outputs carry it.
            let root = tracing::debug_span!("message");
            let carried = Carried::start(&root, None).expect("a new trace");
            assert!(
                !carried
                    .traceparent
                    .contains("4bf92f3577b34da6a3ce929d0e0e4736")
            );
        });
    }
}
