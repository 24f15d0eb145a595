//! Results: one `Report` per measurement, printed as a table (side by side with a ratio
//! when two targets ran the same scenario) and written as JSON.

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// A histogram of microseconds, 1 µs to 1 h, 3 significant digits.
pub fn hist_new() -> Histogram<u64> {
    // Cannot fail: the bounds are constants within hdrhistogram's limits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// One named number.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
}

/// One measurement of one scenario against one target.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub params: Map<String, Value>,
    pub metrics: Vec<Metric>,
    pub notes: Vec<String>,
    /// With --rounds: each round's value of some metrics (the CPU per unit of work).
    pub per_round: Map<String, Value>,
}

impl Report {
    pub fn new(scenario: &str, target: &str) -> Report {
        Report {
            scenario: scenario.into(),
            target: target.into(),
            params: Map::new(),
            metrics: Vec::new(),
            notes: Vec::new(),
            per_round: Map::new(),
        }
    }

    pub fn param(&mut self, k: &str, v: Value) {
        self.params.insert(k.into(), v);
    }

    pub fn metric(&mut self, name: &str, value: f64, unit: &'static str) {
        self.metrics.push(Metric {
            name: name.into(),
            value,
            unit,
        });
    }

    pub fn note(&mut self, n: String) {
        self.notes.push(n);
    }

    /// p50, p90, p99, max of a µs histogram, in milliseconds.
    pub fn latency(&mut self, prefix: &str, h: &Histogram<u64>) {
        self.metric(&format!("{prefix}_count"), h.len() as f64, "");
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            let v = if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1000.0
            };
            self.metric(&format!("{prefix}_{name}_ms"), v, "ms");
        }
        let max = if h.is_empty() {
            0.0
        } else {
            h.max() as f64 / 1000.0
        };
        self.metric(&format!("{prefix}_max_ms"), max, "ms");
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    pub fn to_json(&self) -> Value {
        let metrics: Map<String, Value> = self
            .metrics
            .iter()
            .map(|m| (m.name.clone(), json!(m.value)))
            .collect();
        json!({
            "scenario": self.scenario,
            "target": self.target,
            "params": self.params,
            "metrics": metrics,
            "notes": self.notes,
            "per_round": self.per_round,
        })
    }
}

/// Metrics where any round's bad news is the answer: the largest over the rounds, not the
/// median.
fn worst_of_rounds(name: &str) -> bool {
    [
        "lost",
        "duplicat",
        "error",
        "closing",
        "closed",
        "failed",
        "refused",
        "unanswered",
    ]
    .iter()
    .any(|w| name.contains(w))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One target's phases over several rounds (`rounds[round][phase]`) → one report per
/// phase: each metric the median over the rounds (the largest for losses, duplicates and
/// errors), `rounds` in the params, and each round's value of the CPU metrics in
/// `per_round` (printed as a note, kept in the JSON). One round is returned as it is.
pub fn combine_rounds(rounds: &[Vec<Report>]) -> Vec<Report> {
    if rounds.len() <= 1 {
        return rounds.first().cloned().unwrap_or_default();
    }
    let phases = rounds.iter().map(Vec::len).min().unwrap_or(0);
    (0..phases)
        .map(|phase| {
            let first = &rounds[0][phase];
            let mut out = Report {
                metrics: Vec::new(),
                ..first.clone()
            };
            out.param("rounds", json!(rounds.len()));
            // Every round's notes (a close, an error), not only the first round's.
            out.notes = rounds
                .iter()
                .enumerate()
                .flat_map(|(i, r)| {
                    r[phase]
                        .notes
                        .iter()
                        .map(move |n| format!("round {}: {n}", i + 1))
                })
                .collect();
            for m in &first.metrics {
                let values: Vec<f64> = rounds
                    .iter()
                    .filter_map(|r| r[phase].get(&m.name))
                    .collect();
                let value = if worst_of_rounds(&m.name) {
                    values.iter().copied().fold(0.0, f64::max)
                } else {
                    median(values.clone())
                };
                if m.name.starts_with("server_cpu_per") {
                    out.per_round.insert(m.name.clone(), json!(values));
                }
                out.metric(&m.name, value, m.unit);
            }
            out
        })
        .collect()
}

fn fmt(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Prints one report, or several side by side with the ratio `first / other` for each other.
pub fn print(title: &str, reports: &[&Report]) {
    println!();
    println!("== {title}");
    for r in reports {
        println!("   {}: {}", r.target, Value::Object(r.params.clone()));
    }
    let Some(first) = reports.first() else {
        return;
    };
    let mut header = format!("   {:<30}", "metric");
    for r in reports {
        header.push_str(&format!(
            " {:>14}",
            r.target.split(' ').next().unwrap_or("")
        ));
    }
    for r in reports.iter().skip(1) {
        let name = r.target.split(' ').next().unwrap_or("");
        header.push_str(&format!(" {:>10}", format!("÷{name}")));
    }
    println!("{header}");
    for m in &first.metrics {
        let mut line = format!("   {:<30}", format!("{} {}", m.name, m.unit).trim_end());
        for r in reports {
            line.push_str(&format!(
                " {:>14}",
                r.get(&m.name).map(fmt).unwrap_or_else(|| "-".into())
            ));
        }
        for b in reports.iter().skip(1) {
            let ratio = match (first.get(&m.name), b.get(&m.name)) {
                (Some(x), Some(y)) if y != 0.0 => format!("{:.2}", x / y),
                _ => "-".to_string(),
            };
            line.push_str(&format!(" {ratio:>10}"));
        }
        println!("{line}");
    }
    // With --rounds: each round's ratio, so that the spread behind a median is visible.
    for (name, values) in &first.per_round {
        let Some(mine) = values.as_array() else {
            continue;
        };
        for b in reports.iter().skip(1) {
            let Some(theirs) = b.per_round.get(name).and_then(Value::as_array) else {
                continue;
            };
            let ratios: Vec<String> = mine
                .iter()
                .zip(theirs)
                .map(|(x, y)| match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) if y != 0.0 => format!("{:.2}", x / y),
                    _ => "-".into(),
                })
                .collect();
            let paired: Vec<f64> = mine
                .iter()
                .zip(theirs)
                .filter_map(|(x, y)| Some(x.as_f64()? / y.as_f64().filter(|y| *y != 0.0)?))
                .collect();
            let bname = b.target.split(' ').next().unwrap_or("");
            println!(
                "   {name} ÷{bname} by round: {} (median of the rounds' ratios {:.2})",
                ratios.join(" "),
                median(paired)
            );
        }
    }
    for r in reports {
        for n in &r.notes {
            println!("   note ({}): {n}", r.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(cpu: f64, lost: f64) -> Vec<Report> {
        let mut r = Report::new("fanout", "spotter");
        r.metric("server_cpu_per_delivery_us", cpu, "µs");
        r.metric("lost", lost, "");
        vec![r]
    }

    #[test]
    fn rounds_give_medians_but_the_worst_loss() {
        let combined = combine_rounds(&[round(3.0, 0.0), round(1.0, 2.0), round(2.0, 0.0)]);
        assert_eq!(combined.len(), 1);
        let c = &combined[0];
        assert_eq!(c.get("server_cpu_per_delivery_us"), Some(2.0));
        assert_eq!(c.get("lost"), Some(2.0), "one round's loss is not hidden");
        for name in [
            "duplicates",
            "error_frames",
            "connect_errors",
            "sockets_closed",
            "unanswered",
            "requests_failed",
            "responses_closing_connection",
        ] {
            assert!(worst_of_rounds(name), "{name}");
        }
        for name in [
            "held",
            "deliveries_per_s",
            "server_cpu_per_delivery_us",
            "acks_per_s",
        ] {
            assert!(!worst_of_rounds(name), "{name}");
        }
        assert_eq!(c.params.get("rounds"), Some(&json!(3)));
        assert_eq!(
            c.per_round.get("server_cpu_per_delivery_us"),
            Some(&json!([3.0, 1.0, 2.0]))
        );
        // A note of a later round is kept.
        let mut noted = round(1.0, 0.0);
        noted[0].note("3 sockets closed with 4029".into());
        let with_note = combine_rounds(&[round(1.0, 0.0), noted]);
        assert_eq!(
            with_note[0].notes,
            vec!["round 2: 3 sockets closed with 4029".to_string()]
        );
        // An even count: the mean of the middle two.
        let even = combine_rounds(&[round(4.0, 0.0), round(1.0, 0.0)]);
        assert_eq!(even[0].get("server_cpu_per_delivery_us"), Some(2.5));
        // One round is passed through untouched.
        let one = combine_rounds(&[round(5.0, 1.0)]);
        assert!(one[0].params.get("rounds").is_none());
        assert_eq!(one[0].get("lost"), Some(1.0));
    }
}
