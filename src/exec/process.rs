//! Runs one child process in its own process group, streams its output as lines,
//! and ends it cleanly on cancellation: SIGTERM to the whole group (borgmatic and the
//! borg it started), SIGKILL after the grace period.
//!
//! May import: `config::Secret`, `jobs` (line splitting, pacing, process-group
//! supervision).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::jobs::log::LineSplitter;
use crate::jobs::{Pace, Stream};

/// Most stdout kept when it is captured for parsing (a huge archive list fits).
pub const MAX_CAPTURE_BYTES: usize = 256 * 1024 * 1024;

/// What to run. Arguments come only from typed values; secrets only through `env`.
pub struct ProcessSpec {
    /// The program; a bare name is looked up in `PATH`.
    pub program: PathBuf,
    /// Its arguments, each one element (no shell ever parses them).
    pub args: Vec<OsString>,
    /// Environment added for the child; the only way a secret reaches it.
    pub env: Vec<(String, Secret)>,
    /// Keep stdout for parsing instead of logging it line by line.
    pub capture_stdout: bool,
    /// Time between SIGTERM and SIGKILL when the job is cancelled.
    pub kill_grace: Duration,
}

/// How the process ended.
#[derive(Debug)]
pub struct ProcessOutput {
    /// The exit code, or `128 + signal` when a signal ended it.
    pub exit_code: i32,
    /// Standard output when `capture_stdout` was set (at most [`MAX_CAPTURE_BYTES`]); else empty.
    pub stdout: Vec<u8>,
}

/// Why a process could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started (missing, not executable, …).
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program, as given.
        program: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Waiting for the started process failed.
    #[error("waiting for the process failed: {0}")]
    Wait(std::io::Error),
}

/// Runs the process to its end (or cancellation), giving every output line to
/// `on_line` and awaiting `pace` between reads (the child waits on its pipe meanwhile).
pub async fn run(
    spec: &ProcessSpec,
    cancel: &CancellationToken,
    pace: &Pace,
    on_line: &(dyn Fn(Stream, &str) + Sync),
) -> Result<ProcessOutput, ProcessError> {
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // Our own configuration (tokens included) never reaches a child.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BMQTT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    for (k, v) in &spec.env {
        cmd.env(k, v.expose());
    }
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: spec.program.display().to_string(),
        source,
    })?;
    let pid = child.id().map(|p| Pid::from_raw(p as i32));
    // Recorded while it runs, so a worker killed meanwhile ends it at its next start.
    if let Some(p) = child.id() {
        crate::jobs::supervise::process_started(p);
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let read_out = async {
        match stdout {
            Some(out) if spec.capture_stdout => capture(out).await,
            Some(out) => {
                read_lines(out, Stream::Stdout, pace, on_line).await;
                Vec::new()
            }
            None => Vec::new(),
        }
    };
    let read_err = async {
        if let Some(err) = stderr {
            read_lines(err, Stream::Stderr, pace, on_line).await;
        }
    };
    let wait = async {
        tokio::select! {
            status = child.wait() => status,
            _ = cancel.cancelled() => {
                signal_group(pid, Signal::SIGTERM);
                match tokio::time::timeout(spec.kill_grace, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        tracing::warn!("process ignored SIGTERM; sending SIGKILL");
                        signal_group(pid, Signal::SIGKILL);
                        child.wait().await
                    }
                }
            }
        }
    };
    let (status, stdout, ()) = tokio::join!(wait, read_out, read_err);
    if let Some(p) = pid {
        crate::jobs::supervise::process_ended(p.as_raw() as u32);
    }
    let status = status.map_err(ProcessError::Wait)?;
    let exit_code = match status.code() {
        Some(c) => c,
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }
    };
    Ok(ProcessOutput { exit_code, stdout })
}

fn signal_group(pid: Option<Pid>, signal: Signal) {
    if let Some(pid) = pid {
        if let Err(e) = killpg(pid, signal) {
            tracing::debug!(error = %e, ?signal, "signalling the process group failed");
        }
    }
}

async fn read_lines(
    mut r: impl AsyncRead + Unpin,
    stream: Stream,
    pace: &Pace,
    on_line: &(dyn Fn(Stream, &str) + Sync),
) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                splitter.feed(&buf[..n], |l| on_line(stream, &l));
                pace.ready().await;
            }
        }
    }
    splitter.finish(|l| on_line(stream, &l));
}

async fn capture(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Past the cap, keep reading (so the child never blocks) but drop it.
                if out.len() + n <= MAX_CAPTURE_BYTES {
                    out.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn sh(script: &str, capture: bool) -> ProcessSpec {
        ProcessSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("SECRET_IN_ENV".into(), Secret::new("s3cr3t-value"))],
            capture_stdout: capture,
            kill_grace: Duration::from_millis(300),
        }
    }

    #[tokio::test]
    async fn lines_exit_codes_and_env() {
        let lines = Mutex::new(Vec::new());
        let on = |s: Stream, l: &str| lines.lock().unwrap().push((s, l.to_string()));
        let out = run(
            &sh("echo out; echo err >&2; printf 'a\\rb\\n'; test \"$SECRET_IN_ENV\" = s3cr3t-value && exit 3", false),
            &CancellationToken::new(),
            &Pace::none(),
            &on,
        )
        .await
        .unwrap();
        assert_eq!(out.exit_code, 3);
        let got = lines.into_inner().unwrap();
        assert!(got.contains(&(Stream::Stdout, "out".into())));
        assert!(got.contains(&(Stream::Stderr, "err".into())));
        assert!(got.contains(&(Stream::Stdout, "a".into())));
        assert!(got.contains(&(Stream::Stdout, "b".into())));
    }

    #[tokio::test]
    async fn captured_stdout_is_not_logged() {
        let lines = Mutex::new(Vec::new());
        let on = |s: Stream, l: &str| lines.lock().unwrap().push((s, l.to_string()));
        let out = run(
            &sh("echo '{\"a\":1}'", true),
            &CancellationToken::new(),
            &Pace::none(),
            &on,
        )
        .await
        .unwrap();
        assert_eq!(out.stdout, b"{\"a\":1}\n");
        assert!(lines.into_inner().unwrap().is_empty());
    }

    #[tokio::test]
    async fn cancel_terminates_the_whole_group_and_escalates() {
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        // Cancel as soon as the script says it is ready: an event, not a sleep.
        let on = move |_: Stream, l: &str| {
            if l == "ready" {
                c2.cancel();
            }
        };
        // The shell ignores TERM and its child sleeps: only SIGKILL to the group ends both.
        let spec = sh("trap '' TERM; echo ready; sleep 30 & wait; sleep 30", false);
        let out = run(&spec, &cancel, &Pace::none(), &on).await.unwrap();
        assert_eq!(out.exit_code, 128 + 9);
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let spec = ProcessSpec {
            program: "/nonexistent/borgmatic".into(),
            args: vec![],
            env: vec![],
            capture_stdout: false,
            kill_grace: Duration::from_secs(1),
        };
        let err = run(&spec, &CancellationToken::new(), &Pace::none(), &|_, _| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/borgmatic"));
    }
}
