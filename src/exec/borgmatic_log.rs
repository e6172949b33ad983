//! Rendering borgmatic's `--log-json` output (borgmatic 2.1+): each record becomes a
//! readable line, and borg's progress records also update a `progress` object.
//!
//! Imports nothing of the crate.

use serde_json::{json, Map, Value};

/// What one output line means.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The readable line, if any.
    pub text: Option<String>,
    /// Fields to merge into the job's progress object.
    pub progress: Option<Map<String, Value>>,
}

impl Rendered {
    fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            progress: None,
        }
    }
}

/// Renders one line; lines that are not JSON records pass through unchanged.
pub fn render(line: &str) -> Rendered {
    let Ok(Value::Object(outer)) = serde_json::from_str::<Value>(line) else {
        return Rendered::text(line);
    };
    let message = outer.get("message").and_then(Value::as_str).unwrap_or("");
    // borg's own records arrive as JSON inside borgmatic's `message`.
    let inner = match serde_json::from_str::<Value>(message) {
        Ok(Value::Object(m)) if m.contains_key("type") => m,
        _ => return Rendered::text(message),
    };
    let kind = inner.get("type").and_then(Value::as_str).unwrap_or("");
    let finished = inner.get("finished").and_then(Value::as_bool) == Some(true);
    match kind {
        "archive_progress" if finished => Rendered {
            text: None,
            progress: None,
        },
        "archive_progress" => archive_progress(&inner),
        "progress_percent" => progress_percent(&inner, finished),
        "progress_message" => {
            let msg = inner
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string);
            let mut p = Map::new();
            if let Some(m) = &msg {
                p.insert("message".into(), json!(m));
            }
            Rendered {
                text: msg,
                progress: (!p.is_empty()).then_some(p),
            }
        }
        "file_status" => Rendered::text(format!(
            "{} {}",
            inner.get("status").and_then(Value::as_str).unwrap_or("?"),
            inner.get("path").and_then(Value::as_str).unwrap_or("")
        )),
        // log_message, question_prompt, question_env_answer, …: their message.
        _ => Rendered::text(
            inner
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or(message),
        ),
    }
}

/// borg's running totals of a `create`: a borg-style line and the progress fields.
fn archive_progress(inner: &Map<String, Value>) -> Rendered {
    let mut p = Map::new();
    for k in [
        "original_size",
        "compressed_size",
        "deduplicated_size",
        "nfiles",
        "path",
    ] {
        if let Some(v) = inner.get(k) {
            p.insert(k.into(), v.clone());
        }
    }
    let size = |k: &str| human(inner.get(k).and_then(Value::as_u64).unwrap_or(0));
    let text = format!(
        "{} O {} C {} D {} N {}",
        size("original_size"),
        size("compressed_size"),
        size("deduplicated_size"),
        inner.get("nfiles").and_then(Value::as_u64).unwrap_or(0),
        inner.get("path").and_then(Value::as_str).unwrap_or("")
    );
    Rendered {
        text: Some(text),
        progress: Some(p),
    }
}

/// A step of a longer operation (`check`, `compact`): its percentage and message.
fn progress_percent(inner: &Map<String, Value>, finished: bool) -> Rendered {
    let msg = inner
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string);
    let current = inner.get("current").and_then(Value::as_f64);
    let total = inner.get("total").and_then(Value::as_f64);
    let mut p = Map::new();
    if let (Some(c), Some(t)) = (current, total) {
        if t > 0.0 {
            p.insert("percent".into(), json!(((c / t) * 1000.0).round() / 10.0));
        }
    }
    if let Some(m) = &msg {
        p.insert("message".into(), json!(m));
    }
    Rendered {
        text: if finished { None } else { msg },
        progress: (!p.is_empty()).then_some(p),
    }
}

/// Bytes in borg's style (kB, MB, GB; powers of 1000).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(inner: &str, level: &str) -> String {
        json!({"type": "log_message", "time": 1.0, "message": inner, "levelname": level, "name": null})
            .to_string()
    }

    #[test]
    fn progress_records_update_progress_and_read_well() {
        let r = render(&wrap(
            r#"{"original_size": 2000000, "compressed_size": 1500, "deduplicated_size": 0, "nfiles": 3, "path": "srv/a", "type": "archive_progress", "finished": false}"#,
            "ERROR",
        ));
        assert_eq!(
            r.text.as_deref(),
            Some("2.00 MB O 1.50 kB C 0 B D 3 N srv/a")
        );
        assert_eq!(r.progress.unwrap()["nfiles"], 3);
        let r = render(&wrap(
            r#"{"message": "Checking segments 50.0%", "current": 5, "total": 10, "type": "progress_percent", "finished": false}"#,
            "ERROR",
        ));
        assert_eq!(r.progress.unwrap()["percent"], 50.0);
        let r = render(&wrap(
            r#"{"type": "archive_progress", "finished": true}"#,
            "ERROR",
        ));
        assert!(r.text.is_none());
    }

    #[test]
    fn borg_records_render_as_their_message() {
        let r = render(&wrap(
            r#"{"type": "log_message", "levelname": "WARNING", "name": "borg.archiver", "message": "file changed while we backed it up"}"#,
            "ERROR",
        ));
        assert_eq!(
            r.text.as_deref(),
            Some("file changed while we backed it up")
        );
        let r = render(&wrap(
            r#"{"type": "question_env_answer", "msgid": "X", "message": "YES (from X)"}"#,
            "ERROR",
        ));
        assert_eq!(r.text.as_deref(), Some("YES (from X)"));
        let r = render(&wrap("Treating exit code 1 as a warning", "WARNING"));
        assert_eq!(r.text.as_deref(), Some("Treating exit code 1 as a warning"));
        assert_eq!(
            render("plain text line").text.as_deref(),
            Some("plain text line")
        );
    }
}
