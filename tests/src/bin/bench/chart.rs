//! The results chart: six bar panels (median bars, min–max whiskers, targets
//! as red lines) drawn with plotters' SVG backend from the results JSON, so
//! `bench chart results.json chart.svg` redraws it without measuring again.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

struct Bar {
    name: String,
    median: f64,
    min: f64,
    max: f64,
}

fn bar(name: &str, s: &Value, scale: f64) -> Option<Bar> {
    Some(Bar {
        name: name.to_string(),
        median: s["median"].as_f64()? * scale,
        min: s["min"].as_f64()? * scale,
        max: s["max"].as_f64()? * scale,
    })
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn panel(
    area: &Area<'_>,
    title: &str,
    y_desc: &str,
    bars: &[Bar],
    target: Option<(f64, String)>,
    notes: &[String],
) -> anyhow::Result<()> {
    let n = bars.len().max(1) as u32;
    let top = bars
        .iter()
        .map(|b| b.max.max(b.median))
        .chain(target.as_ref().map(|t| t.0))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let ymax = if top > 0.0 { top * 1.4 } else { 1.0 };
    let names: Vec<String> = bars.iter().map(|b| b.name.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(58)
        // A segmented range a..b has a segment for every value in a..=b.
        .build_cartesian_2d((0u32..n - 1).into_segmented(), 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_desc)
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 12))
        .draw()?;

    let palette = [
        RGBColor(52, 101, 164),
        RGBColor(115, 115, 115),
        RGBColor(78, 154, 6),
        RGBColor(196, 160, 0),
        RGBColor(117, 80, 123),
    ];
    for (i, b) in bars.iter().enumerate() {
        let i = i as u32;
        if !b.median.is_finite() {
            continue;
        }
        let mut rect = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (
                    if i + 1 >= n {
                        SegmentValue::Last
                    } else {
                        SegmentValue::Exact(i + 1)
                    },
                    b.median,
                ),
            ],
            palette[i as usize % palette.len()].filled(),
        );
        rect.set_margin(0, 0, 14, 14);
        chart.draw_series(std::iter::once(rect))?;
        if b.min.is_finite() && b.max.is_finite() && b.max > b.min {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![
                    (SegmentValue::CenterOf(i), b.min),
                    (SegmentValue::CenterOf(i), b.max),
                ],
                BLACK.stroke_width(2),
            )))?;
        }
        let label_at = if b.max.is_finite() {
            b.max.max(b.median)
        } else {
            b.median
        };
        chart.draw_series(std::iter::once(Text::new(
            crate::stats::fmt(b.median),
            (SegmentValue::CenterOf(i), label_at + ymax * 0.02),
            ("sans-serif", 12)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Bottom)),
        )))?;
    }
    if let Some((t, label)) = target {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(SegmentValue::Exact(0), t), (SegmentValue::Last, t)],
                RED.stroke_width(2),
            )))?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
    }
    for (j, note) in notes.iter().enumerate() {
        chart.draw_series(std::iter::once(Text::new(
            note.clone(),
            (SegmentValue::Exact(0), ymax * (0.88 - 0.06 * j as f64)),
            ("sans-serif", 12)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Top)),
        )))?;
    }
    Ok(())
}

pub fn render(results: &Value, out: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(out, (1500, 920)).into_drawing_area();
    root.fill(&WHITE)?;
    let m = &results["machine"];
    let (header, body) = root.split_vertically(50);
    header.draw(&Text::new(
        format!(
            "wasmgate benchmarks: {} cores ({}), load average at start {}; medians, whiskers min-max",
            m["cores"],
            m["cpu_model"].as_str().unwrap_or("?"),
            m["load_average_start"].as_str().unwrap_or("?"),
        ),
        (20, 16),
        ("sans-serif", 18).into_font().color(&BLACK),
    ))?;
    let areas = body.split_evenly((2, 3));

    let c = &results["core"];
    if !c.is_null() {
        let bars: Vec<Bar> = [
            ("gateway", &c["gateway"]),
            ("native", &c["native"]),
            ("gw, batch = false", &c["gateway_unbatched"]),
        ]
        .iter()
        .filter_map(|(n, s)| bar(n, s, 1e-3))
        .collect();
        let native = c["native"]["median"].as_f64().unwrap_or(f64::NAN) * 1e-3;
        panel(
            &areas[0],
            &format!(
                "Core NATS, {} x {} B: ratio {:.2}",
                c["messages"],
                c["payload_bytes"],
                c["ratio"].as_f64().unwrap_or(f64::NAN)
            ),
            "k msg/s",
            &bars,
            Some((native * 0.90, "target 0.90 x native".into())),
            &[],
        )?;
    }
    let j = &results["jetstream"];
    if !j.is_null() {
        let bars: Vec<Bar> = [("gateway", &j["gateway"]), ("native", &j["native"])]
            .iter()
            .filter_map(|(n, s)| bar(n, s, 1e-3))
            .collect();
        let native = j["native"]["median"].as_f64().unwrap_or(f64::NAN) * 1e-3;
        panel(
            &areas[1],
            &format!(
                "JetStream consume+ack: ratio {:.2}",
                j["ratio"].as_f64().unwrap_or(f64::NAN)
            ),
            "k msg/s",
            &bars,
            Some((native * 0.85, "target 0.85 x native".into())),
            &[],
        )?;
    }
    let o = &results["overhead"]["layers"];
    if !o.is_null() {
        let bars: Vec<Bar> = [
            ("noop", "noop_call"),
            ("echo", "echo_call"),
            ("echo, batch", "echo_batch_call"),
            ("dispatch", "full_dispatch"),
            ("disp., batch", "full_dispatch_batched"),
            ("native", "native_work"),
        ]
        .iter()
        .filter_map(|(n, k)| bar(n, &o[*k], 1.0))
        .collect();
        panel(
            &areas[2],
            &format!(
                "Per message, no NATS: overhead {:.0} ns, batched {:.0}",
                results["overhead"]["host_overhead_ns"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                results["overhead"]["host_overhead_batched_ns"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            ),
            "ns / message",
            &bars,
            None,
            &languages_note(&results["overhead"]["languages"]),
        )?;
    }
    let r = &results["recovery"];
    if !r.is_null() {
        let rr = &r["recovery"];
        let bars: Vec<Bar> = [
            ("gateway", &rr["gateway"]),
            ("bare client", &rr["bare_client"]),
        ]
        .iter()
        .filter_map(|(n, s)| bar(n, s, 1.0))
        .collect();
        let s = &r["settings"];
        panel(
            &areas[3],
            "Recovery after kill -9 (restart 2-4 s later)",
            "ms from port open to first message",
            &bars,
            Some((250.0, "target 250 ms".into())),
            &[format!(
                "backoff {}-{} ms x{}",
                s["reconnect.initial_backoff_ms"],
                s["reconnect.max_backoff_ms"],
                s["reconnect.backoff_factor"]
            )],
        )?;
        let h = &r["hung"];
        let mut bars: Vec<Bar> = bar("gateway", &h["gateway"], 1.0).into_iter().collect();
        // The bare client never noticed within the window: an empty slot.
        bars.push(Bar {
            name: "bare client: not noticed".into(),
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        });
        panel(
            &areas[4],
            "Hung server (SIGSTOP) to reconnecting",
            "ms",
            &bars,
            Some((
                h["target_ms"].as_f64().unwrap_or(f64::NAN),
                format!(
                    "target interval x threshold ({} ms x {})",
                    s["health.interval_ms"], s["reconnect.failure_threshold"]
                ),
            )),
            &[format!(
                "bare client noticed in {} of {} runs ({:.1} s windows); 179 s measured before",
                h["bare_client_noticed_runs"],
                h["trials"].as_array().map_or(0, |t| t.len()),
                h["bare_client_window_ms"].as_f64().unwrap_or(0.0) / 1e3
            )],
        )?;
    }
    let s = &results["startup"];
    if !s.is_null() {
        let bars: Vec<Bar> = [
            ("in-process, cold", &s["in_process_cold_ready"]),
            ("in-process, warm", &s["in_process_ready"]),
            ("binary, warm", &s["binary_ready"]),
        ]
        .iter()
        .filter_map(|(n, v)| bar(n, v, 1.0))
        .collect();
        panel(
            &areas[5],
            &format!("Start to ready, {} plugins", s["plugins"]),
            "ms",
            &bars,
            Some((300.0, "target 300 ms (warm)".to_string())),
            &[format!(
                "idle RSS of the binary: {:.1} MiB",
                s["binary_idle_rss"]["median"].as_f64().unwrap_or(f64::NAN)
            )],
        )?;
    }
    root.present()?;
    Ok(())
}

/// "uppercase per message: Rust …, Python …, JS …" when the run measured it.
fn languages_note(l: &Value) -> Vec<String> {
    if l.is_null() {
        return Vec::new();
    }
    let us = |k: &str| l[k]["median"].as_f64().unwrap_or(f64::NAN) / 1e3;
    vec![format!(
        "uppercase: Rust {:.2} µs ({:.2} batched), Python {:.1}, JS {:.1}",
        us("rust"),
        us("rust_batched"),
        us("python"),
        us("javascript")
    )]
}
