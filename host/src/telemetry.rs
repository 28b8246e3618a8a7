//! The Prometheus metrics behind `GET /metrics`. (Logging goes through
//! `tracing`; the binary installs the subscriber, an embedder its own.)

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Prometheus metrics for `GET /metrics`, read from the status at scrape time
/// so the hot path pays nothing beyond its atomic counters.
#[derive(Debug)]
struct StatusCollector(crate::status::StatusHub);

type Labels = Vec<(String, String)>;

fn gauge<N: Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Labels, N)],
) -> std::fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in values {
        ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Labels, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in values {
        ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Labels, &crate::latency::Snapshot)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in values {
        family
            .encode_family(labels)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                h.sum_secs, h.count, &h.buckets, None,
            )?;
    }
    Ok(())
}

impl Collector for StatusCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        use crate::status::{BindingState, ConnectionState as S};
        let (s, times) = self.0.snapshot_with_times();
        let none = Labels::new;
        let states = [
            S::Connecting,
            S::Connected,
            S::Degraded,
            S::Disconnected,
            S::Reconnecting,
            S::Failed,
            S::Draining,
            S::Stopped,
        ];
        let state: Vec<(Labels, i64)> = states
            .iter()
            .map(|st| {
                let labels = vec![("state".to_string(), st.as_str().to_string())];
                (labels, i64::from(*st == s.state))
            })
            .collect();
        gauge(
            &mut e,
            "wasmgate_connection_state",
            "1 for the supervised connection's current state",
            &state,
        )?;
        gauge(
            &mut e,
            "wasmgate_ready",
            "1 when connected with every binding confirmed",
            &[(none(), i64::from(s.ready))],
        )?;
        gauge(
            &mut e,
            "wasmgate_probe_failures",
            "Consecutive failed health probes",
            &[(none(), i64::from(s.consecutive_failures))],
        )?;
        gauge(
            &mut e,
            "wasmgate_reconnect_attempts",
            "Attempts in the current reconnect",
            &[(none(), i64::from(s.reconnect_attempts))],
        )?;
        if let Some(rtt) = s.last_probe_rtt_us {
            gauge(
                &mut e,
                "wasmgate_probe_rtt_seconds",
                "Round trip of the last health probe",
                &[(none(), rtt as f64 / 1e6)],
            )?;
        }
        counter(
            &mut e,
            "wasmgate_reconnects",
            "Completed reconnects since start",
            &[(none(), s.total_reconnects)],
        )?;
        counter(
            &mut e,
            "wasmgate_lame_duck_switches",
            "Moves to another server made before a lame duck server closed the connection",
            &[(none(), s.lame_duck_switches)],
        )?;
        counter(
            &mut e,
            "wasmgate_slow_consumer_events",
            "Slow-consumer events (messages dropped by the client)",
            &[(none(), s.slow_consumer_events)],
        )?;
        counter(
            &mut e,
            "wasmgate_config_reloads",
            "Config or plugin reloads applied",
            &[(none(), s.config_reloads)],
        )?;

        let plugins: Vec<(Labels, i64)> = s
            .plugins
            .iter()
            .map(|p| {
                (
                    vec![("plugin".to_string(), p.name.clone())],
                    p.version as i64,
                )
            })
            .collect();
        gauge(
            &mut e,
            "wasmgate_plugin_version",
            "Version of each plugin (1 at start, +1 per hot swap)",
            &plugins,
        )?;

        let mut requests: Vec<(Labels, u64)> = Vec::new();
        for p in &s.plugins {
            let r = &p.requests;
            for (outcome, n) in [
                ("ok", r.ok),
                ("no_responders", r.no_responders),
                ("timed_out", r.timed_out),
                ("refused", r.refused),
                ("unavailable", r.unavailable),
            ] {
                requests.push((
                    vec![
                        ("plugin".to_string(), p.name.clone()),
                        ("outcome".to_string(), outcome.to_string()),
                    ],
                    n,
                ));
            }
        }
        counter(
            &mut e,
            "wasmgate_requests",
            "Requests plugins made (requester), by outcome (refused: not sent)",
            &requests,
        )?;
        let waits: Vec<(Labels, &crate::latency::Snapshot)> = s
            .plugins
            .iter()
            .filter_map(|p| {
                Some((
                    vec![("plugin".to_string(), p.name.clone())],
                    p.request_time.as_ref()?,
                ))
            })
            .collect();
        if !waits.is_empty() {
            histogram(
                &mut e,
                "wasmgate_request_duration_seconds",
                "Per request a plugin sent, from sending to its reply, timeout or failure",
                &waits,
            )?;
        }

        let binding = |b: &crate::status::BindingStatus| -> Labels {
            vec![
                ("plugin".to_string(), b.plugin.clone()),
                ("subject".to_string(), b.subject.clone()),
            ]
        };
        let bound: Vec<(Labels, i64)> = s
            .bindings
            .iter()
            .map(|b| (binding(b), i64::from(b.state == BindingState::Bound)))
            .collect();
        gauge(
            &mut e,
            "wasmgate_binding_bound",
            "1 when the binding is confirmed by the server",
            &bound,
        )?;
        let mut messages = Vec::new();
        for b in &s.bindings {
            for (outcome, n) in [
                ("handled", b.handled),
                ("retried", b.retried),
                ("rejected", b.rejected),
                ("trapped", b.trapped),
                ("dead_lettered", b.dead_lettered),
                ("dead_letter_failed", b.dead_letter_failed),
                ("shed", b.shed),
            ] {
                let mut labels = binding(b);
                labels.push(("outcome".to_string(), outcome.to_string()));
                messages.push((labels, n));
            }
        }
        counter(
            &mut e,
            "wasmgate_messages",
            "Messages by binding and outcome",
            &messages,
        )?;
        // One counter per binding for each of these.
        type Read = fn(&crate::status::BindingStatus) -> u64;
        let per_binding: [(&str, &str, Read); 5] = [
            (
                "wasmgate_messages_dropped",
                "Core messages dropped on arrival because the binding's or the gateway's buffer was full",
                |b| b.dropped,
            ),
            (
                "wasmgate_publish_failures",
                "Failed publishes, replies and acks",
                |b| b.publish_failed,
            ),
            (
                "wasmgate_publish_unconfirmed",
                "Publishes a stream did not confirm with a PubAck (their input was nak'd or its requester told)",
                |b| b.publish_unconfirmed,
            ),
            (
                "wasmgate_batches",
                "handle-batch calls made (messages handled / batches = mean batch size)",
                |b| b.batches,
            ),
            (
                "wasmgate_batches_rerun",
                "Batch calls that trapped or timed out and were handled again one message at a time",
                |b| b.batches_rerun,
            ),
        ];
        for (name, help, value) in per_binding {
            let values: Vec<(Labels, u64)> =
                s.bindings.iter().map(|b| (binding(b), value(b))).collect();
            counter(&mut e, name, help, &values)?;
        }
        let latency: [(&str, &str); 3] = [
            (
                "wasmgate_handler_duration_seconds",
                "Time in the plugin per call (a handle call, or one handle-batch call for its batch)",
            ),
            (
                "wasmgate_queue_wait_seconds",
                "Per message, from its arrival in the gateway to the start of the call that handles it",
            ),
            (
                "wasmgate_jetstream_settle_delay_seconds",
                "Per JetStream message settled, from its store time in the stream to its ack, nak or term",
            ),
        ];
        for (i, (name, help)) in latency.iter().enumerate() {
            let values: Vec<(Labels, &crate::latency::Snapshot)> = s
                .bindings
                .iter()
                .zip(&times)
                .filter(|(b, _)| i < 2 || b.stream.is_some())
                .filter_map(|(b, t)| Some((binding(b), &t.as_ref()?[i])))
                .collect();
            if !values.is_empty() {
                histogram(&mut e, name, help, &values)?;
            }
        }
        if let Some(c) = &s.compile_cache {
            let outcome = |name: &str| vec![("outcome".to_string(), name.to_string())];
            counter(
                &mut e,
                "wasmgate_compile_cache_loads",
                "Plugin loads by compile cache outcome (hit: not compiled)",
                &[
                    (outcome("hit"), c.hits),
                    (outcome("miss"), c.misses),
                    (outcome("rejected"), c.rejected),
                ],
            )?;
            counter(
                &mut e,
                "wasmgate_compile_cache_evictions",
                "Compile cache entries removed to stay under runtime.cache_max_size",
                &[(Vec::new(), c.evicted)],
            )?;
            counter(
                &mut e,
                "wasmgate_compile_cache_write_errors",
                "Compiled components that could not be written to the cache",
                &[(Vec::new(), c.write_errors)],
            )?;
        }
        Ok(())
    }
}

/// A registry whose only collector reads `status` at scrape time.
pub fn registry(status: crate::status::StatusHub) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatusCollector(status)));
    registry
}

/// The text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}
