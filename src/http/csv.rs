//! `?format=csv` on the day listings (check-ins, attendance): RFC 4180 text that a
//! spreadsheet opens as it is.

use actix_web::http::header;
use actix_web::HttpResponse;

use crate::error::{AppError, AppResult};

/// What a listing answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

/// `?format=`: `json` (the default) or `csv`; anything else is 422.
pub fn parse_format(value: Option<&str>) -> AppResult<Format> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(Format::Json),
        Some(v) if v.eq_ignore_ascii_case("json") => Ok(Format::Json),
        Some(v) if v.eq_ignore_ascii_case("csv") => Ok(Format::Csv),
        Some(v) => Err(AppError::Validation(format!(
            "format must be json or csv, got {v:?}"
        ))),
    }
}

/// One field, quoted when it needs to be. A field that a spreadsheet would run as a
/// formula (`=`, `+`, `-`, `@` first) gets a leading `'`: names and notes are typed by
/// people, and a CSV export must not become a way to run formulas on the manager's machine.
fn field(value: &str) -> String {
    let value = match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}"),
        _ => value.to_string(),
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// A CSV document: the header line, then one line per row (CRLF line ends, RFC 4180).
pub fn document(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut out = header.join(",");
    out.push_str("\r\n");
    for row in rows {
        let line: Vec<String> = row.iter().map(|v| field(v)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A time as it appears in the exports: RFC 3339 UTC to the second.
pub fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The response: `text/csv`, downloaded as `filename`.
pub fn response(filename: &str, body: String) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/csv; charset=utf-8"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        assert_eq!(field("Anna"), "Anna");
        assert_eq!(field("O'Brien, Finn"), "\"O'Brien, Finn\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(field("line\nbreak"), "\"line\nbreak\"");
        let doc = document(&["a", "b"], vec![vec!["1".into(), "x,y".into()]]);
        assert_eq!(doc, "a,b\r\n1,\"x,y\"\r\n");
        assert_eq!(parse_format(Some("CSV")).unwrap(), Format::Csv);
        assert!(parse_format(Some("xml")).is_err());
    }
}
