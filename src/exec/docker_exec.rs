//! `docker exec` as a job task: output streamed into the job log line by line, the
//! exit code from exec inspect. For Nextcloud AIO backups the task then follows the
//! `nextcloud-aio-borgbackup` container to its end, because `daily-backup.sh`
//! returns no meaningful exit code: the borgbackup container's is the outcome.
//!
//! Imports `docker` (the engine) and `jobs` (the `Task` interface, line splitting).

use std::collections::HashMap;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, LogsOptions};
use futures_util::StreamExt;
use serde_json::json;

use crate::docker::{DockerError, Engine};
use crate::jobs::log::LineSplitter;
use crate::jobs::{BoxFuture, JobState, Stream, Task, TaskContext, TaskOutcome};

/// After the script, wait this long for AIO to start its borgbackup container.
#[derive(Debug, Clone)]
pub struct Follow {
    /// The container to follow (AIO's borgbackup container).
    pub container: String,
    /// How long it may take to start before the backup counts as failed.
    pub start_grace: Duration,
}

/// One exec, already allowed by the policy.
pub struct ExecTask {
    /// The engine the exec runs through.
    pub engine: Engine,
    /// The container's name, as the job's data and log show it.
    pub container: String,
    /// What the exec is created in: the id the policy check resolved the name to
    /// (so a rename in between cannot redirect it), or the name itself.
    pub target: String,
    /// The command and its arguments, as the policy allowed them (no shell).
    pub argv: Vec<String>,
    /// Environment of the exec, exact values the policy allowed.
    pub env: Vec<(String, String)>,
    /// A container whose exit decides the outcome instead of the exec's (AIO backups).
    pub follow: Option<Follow>,
}

impl Task for ExecTask {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            // Sub-second precision and no slack: a borgbackup start from a run that
            // ended a moment ago must not count as this one's. (The engine and the
            // containers it runs share one host clock.)
            let started = chrono::Utc::now();
            let exec = match run_exec(&self, &ctx).await {
                Ok(Some(code)) => code,
                Ok(None) => return TaskOutcome::failed("stopped before the command ended"),
                Err(e) => {
                    self.engine.reset().await;
                    return TaskOutcome::failed(e.to_string());
                }
            };
            let Some(follow) = &self.follow else {
                return TaskOutcome {
                    state: if exec == 0 {
                        JobState::Succeeded
                    } else {
                        JobState::Failed
                    },
                    exit_code: Some(exec as i32),
                    data: Some(json!({ "container": self.container, "exit_code": exec })),
                    error: (exec != 0).then(|| format!("the command exited with code {exec}")),
                };
            };
            ctx.line(
                Stream::Stdout,
                &format!(
                    "{} exited with {exec}; following {}",
                    self.argv.join(" "),
                    follow.container
                ),
            );
            match follow_container(&self.engine, &ctx, follow, started).await {
                Ok(Some(code)) => TaskOutcome {
                    state: if code == 0 {
                        JobState::Succeeded
                    } else {
                        JobState::Failed
                    },
                    exit_code: Some(code as i32),
                    data: Some(json!({
                        "script_exit_code": exec,
                        "borgbackup_exit_code": code,
                        "container": follow.container,
                    })),
                    error: (code != 0)
                        .then(|| format!("{} exited with code {code}", follow.container)),
                },
                Ok(None) => TaskOutcome {
                    state: JobState::Failed,
                    exit_code: None,
                    data: Some(json!({ "script_exit_code": exec, "container": follow.container })),
                    error: Some(format!(
                        "{} never started within {}s: Nextcloud AIO did not begin the backup (see the lines above)",
                        follow.container,
                        follow.start_grace.as_secs()
                    )),
                },
                Err(e) => {
                    self.engine.reset().await;
                    TaskOutcome::failed(e.to_string())
                }
            }
        })
    }
}

/// Runs the exec, streaming its output; `None` when cancelled.
async fn run_exec(task: &ExecTask, ctx: &TaskContext) -> Result<Option<i64>, DockerError> {
    exec_streaming(&task.engine, &task.target, &task.argv, &task.env, ctx).await
}

/// Runs one exec (already allowed) with its output in `ctx`'s job log; the exit
/// code, or `None` when the job was cancelled first.
pub async fn exec_streaming(
    engine: &Engine,
    container: &str,
    argv: &[String],
    env: &[(String, String)],
    ctx: &TaskContext,
) -> Result<Option<i64>, DockerError> {
    let docker = engine.client().await?;
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(argv.to_vec()),
                env: Some(env),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await?;
    let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&created.id, None).await?
    else {
        return Err(DockerError::Other("exec did not attach".into()));
    };
    let mut out = LineSplitter::default();
    let mut err = LineSplitter::default();
    loop {
        let item = tokio::select! {
            item = output.next() => item,
            // Docker cannot kill an exec; stop following it and say so.
            _ = ctx.cancel.cancelled() => {
                ctx.line(Stream::Stderr, "stopped following the exec; Docker cannot end a process started by exec");
                return Ok(None);
            }
        };
        match item {
            None => break,
            Some(Ok(chunk)) => {
                feed(ctx, &mut out, &mut err, chunk);
                ctx.pace().ready().await;
            }
            Some(Err(e)) => return Err(DockerError::from(e)),
        }
    }
    out.finish(|l| ctx.line(Stream::Stdout, &l));
    err.finish(|l| ctx.line(Stream::Stderr, &l));
    let inspect = docker.inspect_exec(&created.id).await?;
    Ok(Some(inspect.exit_code.unwrap_or(-1)))
}

fn feed(ctx: &TaskContext, out: &mut LineSplitter, err: &mut LineSplitter, chunk: LogOutput) {
    match chunk {
        LogOutput::StdErr { message } => err.feed(&message, |l| ctx.line(Stream::Stderr, &l)),
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            out.feed(&message, |l| ctx.line(Stream::Stdout, &l))
        }
        LogOutput::StdIn { .. } => {}
    }
}

/// Whether `follow.container` started after `since`, waiting up to its start
/// grace for the start event; `false` when it did not or the job was cancelled.
async fn started(
    docker: &bollard::Docker,
    ctx: &TaskContext,
    follow: &Follow,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<bool, DockerError> {
    let name = &follow.container;
    let started_since = |state: &Option<bollard::models::ContainerState>| {
        state
            .as_ref()
            .and_then(|s| s.started_at.as_deref())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t >= since)
    };
    let inspect = docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await?;
    if !started_since(&inspect.state) {
        // Wait for its start event (events since `since` include one that already
        // happened while the script ran).
        let filters = HashMap::from([
            ("container".to_string(), vec![name.clone()]),
            ("event".to_string(), vec!["start".to_string()]),
        ]);
        let since_arg = format!(
            "{}.{:09}",
            since.timestamp(),
            since.timestamp_subsec_nanos()
        );
        let mut events = docker.events(Some(EventsOptions {
            since: Some(since_arg),
            filters: Some(filters),
            ..Default::default()
        }));
        let got = tokio::select! {
            e = events.next() => e,
            _ = tokio::time::sleep(follow.start_grace) => None,
            _ = ctx.cancel.cancelled() => return Ok(false),
        };
        match got {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(DockerError::from(e)),
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// Waits for `follow.container` to start (after `since`), streams its logs until
/// it stops, and returns its exit code; `None` when it never started.
async fn follow_container(
    engine: &Engine,
    ctx: &TaskContext,
    follow: &Follow,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<Option<i64>, DockerError> {
    let docker = engine.client().await?;
    let name = &follow.container;
    if !started(&docker, ctx, follow, since).await? {
        return Ok(None);
    }
    ctx.line(
        Stream::Stdout,
        &format!("{name} started; its output follows"),
    );
    let mut logs = docker.logs(
        name,
        Some(LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            since: since.timestamp() as i32,
            ..Default::default()
        }),
    );
    let mut out = LineSplitter::default();
    let mut err = LineSplitter::default();
    loop {
        let item = tokio::select! {
            item = logs.next() => item,
            _ = ctx.cancel.cancelled() => return Ok(None),
        };
        match item {
            None => break,
            Some(Ok(chunk)) => {
                feed(ctx, &mut out, &mut err, chunk);
                ctx.pace().ready().await;
            }
            Some(Err(e)) => return Err(DockerError::from(e)),
        }
    }
    out.finish(|l| ctx.line(Stream::Stdout, &l));
    err.finish(|l| ctx.line(Stream::Stderr, &l));
    // The log stream ends when the container stops; its state holds the exit code.
    let inspect = docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await?;
    Ok(inspect.state.and_then(|s| s.exit_code))
}
