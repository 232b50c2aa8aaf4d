//! Storage and cost report over a window of the run history: per
//! repository its size, growth per day and projected monthly cost; per
//! plan and target the success rate, sizes, what deduplication and
//! compression saved, and how run times trend. Rendered as Markdown, JSON,
//! or one self-contained HTML file whose charts are inline SVG.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use kura_policy::Config;
use kura_runner::history::History;
use serde::Serialize;

use crate::{size, MonitorError};

#[derive(Debug, Serialize)]
pub struct Report {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub repositories: Vec<RepositoryReport>,
    pub plans: Vec<PlanReport>,
}

#[derive(Debug, Serialize)]
pub struct RepositoryReport {
    pub repository: String,
    /// The newest measured size (after a run of this host).
    pub stored_bytes: Option<u64>,
    pub growth_bytes_per_day: Option<f64>,
    pub price_per_gb_month: Option<f64>,
    /// At today's size.
    pub monthly_cost: Option<f64>,
    /// At the size it will have in 30 days, growing as it did.
    pub projected_monthly_cost: Option<f64>,
    pub quota_bytes: Option<u64>,
    pub sizes: Vec<(DateTime<Utc>, u64)>,
}

#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub plan: String,
    pub runs: usize,
    pub succeeded: usize,
    pub success_rate: Option<f64>,
    pub median_duration_seconds: Option<f64>,
    /// The median of the newest third of runs over that of the oldest
    /// third: above 1, runs are getting slower.
    pub duration_trend: Option<f64>,
    pub targets: Vec<TargetReport>,
    /// Per run, oldest first: (started, bytes read, bytes added, seconds).
    pub series: Vec<(DateTime<Utc>, i64, i64, f64)>,
}

#[derive(Debug, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub latest_bytes: i64,
    pub bytes_read: i64,
    pub bytes_added: i64,
    pub bytes_stored: i64,
    /// Bytes read per byte that was new: what deduplication saved.
    pub dedup_ratio: Option<f64>,
    /// New bytes per byte stored: what compression saved.
    pub compression_ratio: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn ratio(a: i64, b: i64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

pub fn build(
    cfg: &Config,
    state_dir: &Path,
    since: Duration,
    now: DateTime<Utc>,
) -> Result<Report, MonitorError> {
    let from = now - since;
    let history = History::open(&state_dir.join("history.db"))?;
    let sizes = history.repository_sizes(from)?;
    let mut repositories = Vec::new();
    for (name, r) in &cfg.repositories {
        let series: Vec<(DateTime<Utc>, u64)> = sizes.get(name).cloned().unwrap_or_default();
        let stored = series.last().map(|(_, b)| *b);
        let in_window: Vec<&(DateTime<Utc>, u64)> = series.iter().filter(|(t, _)| *t >= from).collect();
        let growth = match (in_window.first(), in_window.last()) {
            (Some(a), Some(b)) if b.0 - a.0 >= Duration::hours(1) => {
                Some((b.1 as f64 - a.1 as f64) / ((b.0 - a.0).num_seconds() as f64 / 86_400.0))
            }
            _ => None,
        };
        let cost = |bytes: f64| r.price_per_gb_month.map(|p| bytes.max(0.0) / 1e9 * p);
        repositories.push(RepositoryReport {
            repository: name.clone(),
            stored_bytes: stored,
            growth_bytes_per_day: growth,
            price_per_gb_month: r.price_per_gb_month,
            monthly_cost: stored.and_then(|s| cost(s as f64)),
            projected_monthly_cost: stored.and_then(|s| cost(s as f64 + 30.0 * growth.unwrap_or(0.0))),
            quota_bytes: r.quota,
            sizes: in_window.into_iter().cloned().collect(),
        });
    }
    let mut plans = Vec::new();
    for name in cfg.plans.keys() {
        let mut runs: Vec<_> = history
            .list(Some(name), 100_000)?
            .into_iter()
            .filter(|e| e.kind == "backup" && e.started >= from)
            .collect();
        runs.reverse();
        let good: Vec<_> = runs.iter().filter(|e| e.status == "ok" || e.status == "warnings").collect();
        let durations: Vec<f64> = good.iter().map(|e| e.duration_ms as f64 / 1000.0).collect();
        let third = durations.len() / 3;
        let trend = (third >= 1)
            .then(|| {
                let old = median(durations[..third].to_vec())?;
                let new = median(durations[durations.len() - third..].to_vec())?;
                (old > 0.0).then(|| new / old)
            })
            .flatten();
        let mut targets: BTreeMap<String, TargetReport> = BTreeMap::new();
        for e in &good {
            for t in e.targets.iter().filter(|t| t.ok) {
                let r = targets.entry(t.target.clone()).or_insert_with(|| TargetReport {
                    target: t.target.clone(),
                    latest_bytes: 0,
                    bytes_read: 0,
                    bytes_added: 0,
                    bytes_stored: 0,
                    dedup_ratio: None,
                    compression_ratio: None,
                });
                r.latest_bytes = t.bytes_read;
                r.bytes_read += t.bytes_read;
                r.bytes_added += t.bytes_added;
                r.bytes_stored += t.bytes_stored;
            }
        }
        for t in targets.values_mut() {
            t.dedup_ratio = ratio(t.bytes_read, t.bytes_added);
            t.compression_ratio = ratio(t.bytes_added, t.bytes_stored);
        }
        plans.push(PlanReport {
            plan: name.clone(),
            runs: runs.len(),
            succeeded: good.len(),
            success_rate: (!runs.is_empty()).then(|| good.len() as f64 / runs.len() as f64),
            median_duration_seconds: median(durations.clone()),
            duration_trend: trend,
            targets: targets.into_values().collect(),
            series: good
                .iter()
                .map(|e| {
                    (
                        e.started,
                        e.targets.iter().map(|t| t.bytes_read).sum(),
                        e.targets.iter().map(|t| t.bytes_added).sum(),
                        e.duration_ms as f64 / 1000.0,
                    )
                })
                .collect(),
        });
    }
    Ok(Report { since: from, until: now, repositories, plans })
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# kura report\n\n{} to {}\n\n## Repositories\n\n| repository | stored | growth per day | per month now | projected in 30 days | quota |\n|---|---|---|---|---|---|",
        r.since.format("%Y-%m-%d %H:%M UTC"),
        r.until.format("%Y-%m-%d %H:%M UTC")
    );
    for x in &r.repositories {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            x.repository,
            opt(x.stored_bytes, size),
            opt(x.growth_bytes_per_day, |g| format!(
                "{}{}",
                if g < 0.0 { "-" } else { "" },
                size(g.abs() as u64)
            )),
            opt(x.monthly_cost, |c| format!("{c:.2}")),
            opt(x.projected_monthly_cost, |c| format!("{c:.2}")),
            opt(x.quota_bytes, size),
        );
    }
    let _ = writeln!(out, "\n## Plans\n");
    for p in &r.plans {
        let _ = writeln!(
            out,
            "### {}\n\n{} runs, {} succeeded ({}); median run {}; trend {}\n",
            p.plan,
            p.runs,
            p.succeeded,
            opt(p.success_rate, |s| format!("{:.0}%", 100.0 * s)),
            opt(p.median_duration_seconds, |s| format!("{s:.1}s")),
            opt(p.duration_trend, |t| format!("{t:.2}×")),
        );
        let _ = writeln!(
            out,
            "| target | size | read | new | stored | dedup | compression |\n|---|---|---|---|---|---|---|"
        );
        for t in &p.targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                t.target,
                size(t.latest_bytes.max(0) as u64),
                size(t.bytes_read.max(0) as u64),
                size(t.bytes_added.max(0) as u64),
                size(t.bytes_stored.max(0) as u64),
                opt(t.dedup_ratio, |d| format!("{d:.1}×")),
                opt(t.compression_ratio, |c| format!("{c:.1}×")),
            );
        }
        out.push('\n');
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A line chart of `points` (x: time, y: value) as inline SVG.
fn chart(title: &str, points: &[(DateTime<Utc>, f64)], unit: impl Fn(f64) -> String) -> String {
    let (w, h, pad) = (640.0, 180.0, 40.0);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\">",
        escape(title)
    );
    if points.is_empty() {
        svg.push_str("<text x=\"20\" y=\"90\">no runs in this window</text></svg></figure>");
        return svg;
    }
    let t0 = points[0].0.timestamp() as f64;
    let t1 = points[points.len() - 1].0.timestamp() as f64;
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9);
    let x = |t: f64| if t1 > t0 { pad + (t - t0) / (t1 - t0) * (w - 2.0 * pad) } else { w / 2.0 };
    let y = |v: f64| h - pad - v / max * (h - 2.0 * pad);
    let path: Vec<String> =
        points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(t.timestamp() as f64), y(*v))).collect();
    let _ = write!(
        svg,
        "<line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"#999\"/>\
         <polyline fill=\"none\" stroke=\"#2a6f97\" stroke-width=\"2\" points=\"{}\"/>",
        path.join(" "),
        b = h - pad,
        r = w - pad
    );
    for (t, v) in points {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#2a6f97\"><title>{}: {}</title></circle>",
            x(t.timestamp() as f64),
            y(*v),
            t.format("%Y-%m-%d %H:%M"),
            escape(&unit(*v))
        );
    }
    let _ = write!(
        svg,
        "<text x=\"4\" y=\"{pad}\" font-size=\"11\">{}</text><text x=\"{pad}\" y=\"{}\" font-size=\"11\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text></svg></figure>",
        escape(&unit(max)),
        h - 10.0,
        points[0].0.format("%m-%d"),
        w - pad,
        h - 10.0,
        points[points.len() - 1].0.format("%m-%d")
    );
    svg
}

/// Markdown as this crate writes it (headings, pipe tables, fenced code,
/// paragraphs) as HTML, every text escaped.
pub fn md_to_html(md: &str) -> String {
    let mut body = String::new();
    let (mut in_table, mut in_code) = (false, false);
    for line in md.lines() {
        if line.starts_with("```") {
            body.push_str(if in_code { "</code></pre>" } else { "<pre><code>" });
            in_code = !in_code;
            continue;
        }
        if in_code {
            let _ = writeln!(body, "{}", escape(line));
            continue;
        }
        if in_table && !line.starts_with('|') {
            body.push_str("</table>");
            in_table = false;
        }
        if let Some(h) = line.strip_prefix("### ") {
            let _ = write!(body, "<h3>{}</h3>", escape(h));
        } else if let Some(h) = line.strip_prefix("## ") {
            let _ = write!(body, "<h2>{}</h2>", escape(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = write!(body, "<h1>{}</h1>", escape(h));
        } else if line.starts_with("|---") {
            continue;
        } else if line.starts_with('|') {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let tag = if in_table { "td" } else { "th" };
            if !in_table {
                body.push_str("<table>");
                in_table = true;
            }
            body.push_str("<tr>");
            for c in cells {
                let _ = write!(body, "<{tag}>{}</{tag}>", escape(c));
            }
            body.push_str("</tr>");
        } else if let Some(item) = line.strip_prefix("- ") {
            let _ = write!(body, "<p>• {}</p>", escape(item));
        } else if !line.trim().is_empty() {
            let _ = write!(body, "<p>{}</p>", escape(line));
        }
    }
    if in_table {
        body.push_str("</table>");
    }
    body
}

/// A self-contained page around `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}}\
         table{{border-collapse:collapse;margin:.5rem 0 1rem}}td,th{{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}figure{{margin:1rem 0}}figcaption{{font-weight:600}}\
         pre{{background:#f4f4f4;padding:.6rem;overflow-x:auto}}\
         </style></head><body>{body}</body></html>\n",
        escape(title)
    )
}

/// One HTML file, no external assets: tables and inline SVG charts.
pub fn html(r: &Report) -> String {
    let mut body = md_to_html(&markdown(r));
    body.push_str("<h2>Over time</h2>");
    for x in &r.repositories {
        let pts: Vec<(DateTime<Utc>, f64)> = x.sizes.iter().map(|(t, b)| (*t, *b as f64)).collect();
        body.push_str(&chart(&format!("{}: stored", x.repository), &pts, |v| size(v as u64)));
    }
    for p in &r.plans {
        let read: Vec<(DateTime<Utc>, f64)> = p.series.iter().map(|s| (s.0, s.1 as f64)).collect();
        let added: Vec<(DateTime<Utc>, f64)> = p.series.iter().map(|s| (s.0, s.2 as f64)).collect();
        let took: Vec<(DateTime<Utc>, f64)> = p.series.iter().map(|s| (s.0, s.3)).collect();
        body.push_str(&chart(&format!("{}: size (bytes read)", p.plan), &read, |v| size(v as u64)));
        body.push_str(&chart(&format!("{}: new bytes per run", p.plan), &added, |v| size(v as u64)));
        body.push_str(&chart(&format!("{}: run time", p.plan), &took, |v| format!("{v:.1}s")));
    }
    page("kura report", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_escapes_what_it_names_and_draws_every_point() {
        let t: DateTime<Utc> = "2026-12-01T02:00:00Z".parse().unwrap();
        let svg = chart("a<b", &[(t, 1.0), (t + Duration::days(1), 3.0)], |v| format!("{v}"));
        assert!(svg.contains("a&lt;b"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(chart("x", &[], |v| format!("{v}")).contains("no runs"));
    }
}
