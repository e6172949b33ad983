//! The engine's state machine with scripted tasks (no processes involved).
//!
//! Test code: may import any module (`scripts/import-cycles` counts production code only).
use super::*;
use std::time::Duration;

use crate::domain::RepositoryLabel;
use crate::domain::Role;
use crate::jobs::{BoxFuture, CancelReason, Stream, Task, TaskOutcome};

struct Scripted {
    lines: usize,
    wait_for_cancel: bool,
    state: JobState,
}

impl Task for Scripted {
    fn run(self: Box<Self>, ctx: TaskContext) -> BoxFuture<TaskOutcome> {
        Box::pin(async move {
            for i in 0..self.lines {
                ctx.line(Stream::Stdout, &format!("line {i} secret-value-123"));
            }
            if self.wait_for_cancel {
                ctx.cancel.cancelled().await;
            }
            TaskOutcome {
                state: self.state,
                exit_code: Some(0),
                data: None,
                error: None,
            }
        })
    }
}

fn engine(dir: &std::path::Path, max: usize) -> JobEngine {
    let settings = JobSettings {
        max_concurrent: max,
        ..JobSettings::default()
    };
    JobEngine::new(
        Store::open(dir).unwrap(),
        settings,
        Redactor::new(vec!["secret-value-123".into()]),
    )
    .unwrap()
}

fn spec(repo: &str, task: Scripted, timeout: Duration) -> JobSpec {
    let label = RepositoryLabel::parse(repo).unwrap();
    JobSpec {
        command: "backup/run",
        role: Role::Write,
        locks: vec![repo_lock(&label)],
        repository: Some(label),
        request_id: None,
        timeout,
        task: Box::new(task),
        secrets: vec![],
        bypass_limit: false,
        background: false,
    }
}

async fn until_final(rx: &mut broadcast::Receiver<JobEvent>, id: JobId) -> JobResult {
    loop {
        if let JobEvent::Result(r) = rx.recv().await.unwrap() {
            if r.record.job_id == id {
                return (*r).clone();
            }
        }
    }
}

#[tokio::test]
async fn lines_are_contiguous_and_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), 1);
    let mut rx = e.subscribe();
    let task = Scripted {
        lines: 5,
        wait_for_cancel: false,
        state: JobState::Succeeded,
    };
    let rec = e.submit(spec("a", task, Duration::from_secs(5))).unwrap();
    let res = until_final(&mut rx, rec.job_id).await;
    assert_eq!(res.record.state, JobState::Succeeded);
    assert_eq!(res.record.lines, 5);
    let lines = e.log(rec.job_id, 0, 100).unwrap();
    assert_eq!(
        lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(lines.iter().all(|l| !l.line.contains("secret-value-123")));
}

#[tokio::test]
async fn busy_queue_cancel_and_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), 1);
    let mut rx = e.subscribe();
    let hold = |s| Scripted {
        lines: 0,
        wait_for_cancel: true,
        state: s,
    };
    let a = e
        .submit(spec(
            "a",
            hold(JobState::Succeeded),
            Duration::from_secs(60),
        ))
        .unwrap();
    let busy = e
        .submit(spec(
            "a",
            hold(JobState::Succeeded),
            Duration::from_secs(60),
        ))
        .unwrap_err();
    assert_eq!(
        busy,
        SubmitError::Busy {
            what: "repository a".into(),
            job_id: a.job_id
        }
    );
    // Global limit 1: b waits queued; cancelling it ends it without running.
    let b = e
        .submit(spec(
            "b",
            hold(JobState::Succeeded),
            Duration::from_secs(60),
        ))
        .unwrap();
    e.cancel(b.job_id, CancelReason::User).unwrap();
    let rb = until_final(&mut rx, b.job_id).await;
    assert_eq!(rb.record.state, JobState::Cancelled);
    assert!(rb.record.started_at.is_none());
    e.cancel(a.job_id, CancelReason::User).unwrap();
    assert_eq!(
        until_final(&mut rx, a.job_id).await.record.state,
        JobState::Cancelled
    );
    // The repository is free again; a timeout ends the job failed.
    let c = e
        .submit(spec(
            "a",
            hold(JobState::Succeeded),
            Duration::from_millis(50),
        ))
        .unwrap();
    let rc = until_final(&mut rx, c.job_id).await;
    assert_eq!(rc.record.state, JobState::Failed);
    assert!(rc.record.error.unwrap().contains("timed out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_is_free_when_the_result_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), 1);
    let mut rx = e.subscribe();
    let quick = || Scripted {
        lines: 0,
        wait_for_cancel: false,
        state: JobState::Succeeded,
    };
    let mut id = e
        .submit(spec("a", quick(), Duration::from_secs(5)))
        .unwrap()
        .job_id;
    for _ in 0..300 {
        until_final(&mut rx, id).await;
        // The very moment the result is out, the next job on the repository starts.
        id = e
            .submit(spec("a", quick(), Duration::from_secs(5)))
            .expect("busy right after the result")
            .job_id;
    }
}

#[tokio::test]
async fn queued_jobs_are_capped_per_line_and_writes_start_first() {
    let dir = tempfile::tempdir().unwrap();
    let settings = JobSettings {
        max_concurrent: 1,
        max_queued_read: 2,
        max_queued_write: 1,
        ..JobSettings::default()
    };
    let e = JobEngine::new(
        Store::open(dir.path()).unwrap(),
        settings,
        Redactor::default(),
    )
    .unwrap();
    let mut rx = e.subscribe();
    let hold = || Scripted {
        lines: 0,
        wait_for_cancel: true,
        state: JobState::Succeeded,
    };
    let quick = || Scripted {
        lines: 0,
        wait_for_cancel: false,
        state: JobState::Succeeded,
    };
    let read = |task| JobSpec {
        command: "config/validate",
        role: Role::Read,
        locks: vec![],
        repository: None,
        request_id: None,
        timeout: Duration::from_secs(60),
        task: Box::new(task),
        secrets: vec![],
        bypass_limit: false,
        background: false,
    };
    let holder = e
        .submit(spec("a", hold(), Duration::from_secs(60)))
        .unwrap();
    // The holder runs; wait until it left the queue.
    loop {
        if let JobEvent::State(r) = rx.recv().await.unwrap() {
            if r.job_id == holder.job_id && r.state == JobState::Running {
                break;
            }
        }
    }
    let r1 = e.submit(read(quick())).unwrap();
    let r2 = e.submit(read(quick())).unwrap();
    let full = e.submit(read(quick())).unwrap_err();
    assert!(
        matches!(full, SubmitError::QueueFull { queued: 2, .. }),
        "{full}"
    );
    // Writes have their own allowance, and start before the queued reads.
    let w = e
        .submit(spec("b", quick(), Duration::from_secs(60)))
        .unwrap();
    assert!(matches!(
        e.submit(spec("c", quick(), Duration::from_secs(60))),
        Err(SubmitError::QueueFull { .. })
    ));
    e.cancel(holder.job_id, CancelReason::User).unwrap();
    let mut started = Vec::new();
    while started.len() < 3 {
        if let JobEvent::State(r) = rx.recv().await.unwrap() {
            if r.state == JobState::Running {
                started.push(r.job_id);
            }
        }
    }
    assert_eq!(started, vec![w.job_id, r1.job_id, r2.job_id]);
    // Queues drained: reads are accepted again.
    until_final(&mut rx, r2.job_id).await;
    e.submit(read(quick())).unwrap();
}

#[tokio::test]
async fn shutdown_interrupts_and_restart_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let e = engine(dir.path(), 2);
        let mut rx = e.subscribe();
        let rec = e
            .submit(spec(
                "a",
                Scripted {
                    lines: 2,
                    wait_for_cancel: true,
                    state: JobState::Succeeded,
                },
                Duration::from_secs(60),
            ))
            .unwrap();
        // Shut down only once the task has produced both lines.
        loop {
            if let JobEvent::Log(l) = rx.recv().await.unwrap() {
                if l.line.seq == 2 {
                    break;
                }
            }
        }
        e.shutdown().await;
        assert_eq!(e.get(rec.job_id).unwrap().state, JobState::Interrupted);
        assert!(e
            .submit(spec(
                "b",
                Scripted {
                    lines: 0,
                    wait_for_cancel: false,
                    state: JobState::Succeeded
                },
                Duration::from_secs(1)
            ))
            .is_err());
        rec.job_id
    };
    let e = engine(dir.path(), 2);
    let rec = e.get(id).unwrap();
    assert_eq!(rec.state, JobState::Interrupted);
    assert_eq!(e.log(id, 0, 10).unwrap().len(), 2);
}

#[tokio::test]
async fn finished_jobs_expire() {
    let dir = tempfile::tempdir().unwrap();
    let settings = JobSettings {
        ttl_secs: 0,
        ..JobSettings::default()
    };
    let e = JobEngine::new(
        Store::open(dir.path()).unwrap(),
        settings,
        Redactor::default(),
    )
    .unwrap();
    let mut rx = e.subscribe();
    let rec = e
        .submit(spec(
            "a",
            Scripted {
                lines: 0,
                wait_for_cancel: false,
                state: JobState::Succeeded,
            },
            Duration::from_secs(5),
        ))
        .unwrap();
    loop {
        if let JobEvent::Forgotten(id) = rx.recv().await.unwrap() {
            assert_eq!(id, rec.job_id);
            break;
        }
    }
    assert!(e.get(rec.job_id).is_none());
}

#[tokio::test]
async fn a_client_job_waits_for_background_work_instead_of_busy() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), 2);
    let mut rx = e.subscribe();
    let hold = || Scripted {
        lines: 0,
        wait_for_cancel: true,
        state: JobState::Succeeded,
    };
    let probe_done = e
        .submit_background(spec("a", hold(), Duration::from_secs(60)))
        .unwrap();
    let probe = e.list(None, 10);
    assert!(
        probe.is_empty(),
        "background work is never listed: {probe:?}"
    );
    let probe_id = {
        let jobs = lock(&e.shared.jobs);
        *jobs.keys().next().unwrap()
    };
    // A client's job takes the repository over and waits, queued.
    let client = e
        .submit(spec("a", hold(), Duration::from_secs(60)))
        .unwrap();
    // Background work meets anything that holds the repository as `busy`, and
    // so does a second client job (the first client job holds it now).
    assert!(matches!(
        e.submit_background(spec("a", hold(), Duration::from_secs(60))),
        Err(SubmitError::Busy { job_id, .. }) if job_id == client.job_id
    ));
    assert!(matches!(
        e.submit(spec("a", hold(), Duration::from_secs(60))),
        Err(SubmitError::Busy { job_id, .. }) if job_id == client.job_id
    ));
    assert_eq!(e.get(client.job_id).unwrap().state, JobState::Queued);
    // The probe was asked to stop; the client's job starts only after it ended.
    let ended = probe_done.await.unwrap();
    assert_eq!(ended.record.state, JobState::Cancelled);
    assert!(e.get(probe_id).is_some());
    let started = loop {
        if let JobEvent::State(r) = rx.recv().await.unwrap() {
            if r.job_id == client.job_id && r.state == JobState::Running {
                break r;
            }
        }
    };
    assert!(started.started_at.unwrap() >= ended.record.finished_at.unwrap());
    e.cancel(client.job_id, CancelReason::User).unwrap();
    assert_eq!(
        until_final(&mut rx, client.job_id).await.record.state,
        JobState::Cancelled
    );
    // Nothing holds the repository any more.
    let last = e
        .submit(spec("a", hold(), Duration::from_secs(60)))
        .unwrap();
    e.cancel(last.job_id, CancelReason::User).unwrap();
}
