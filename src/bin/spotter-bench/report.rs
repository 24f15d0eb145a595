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
}

impl Report {
    pub fn new(scenario: &str, target: &str) -> Report {
        Report {
            scenario: scenario.into(),
            target: target.into(),
            params: Map::new(),
            metrics: Vec::new(),
            notes: Vec::new(),
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
        })
    }
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
    for r in reports {
        for n in &r.notes {
            println!("   note ({}): {n}", r.target);
        }
    }
}
