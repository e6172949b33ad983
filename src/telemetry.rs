//! Tracing set-up: human text or one JSON object per line, written to any writer so
//! tests can capture it.
//!
//! Imports `config::LogFormat` only.

use std::io::IsTerminal;

use tracing::Dispatch;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set.
pub fn init<W>(format: LogFormat, level: &str, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    if let Err(e) = dispatch(format, level, writer).try_init() {
        eprintln!("tracing was already initialised: {e}");
    }
}

/// The subscriber [`init`] installs, without installing it: the in-process test
/// worker makes it the default of its own runtime's threads, so several workers in
/// one process each log to their own writer. `RUST_LOG` overrides `level` when set.
pub fn dispatch<W>(format: LogFormat, level: &str, writer: W) -> Dispatch
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => Dispatch::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
        LogFormat::Text => Dispatch::new(
            builder
                .with_target(false)
                .with_ansi(std::io::stderr().is_terminal())
                .finish(),
        ),
    }
}
