//! Start-up and shutdown: runs the guards, builds the parts, and tears them down in
//! an order that loses nothing (stop taking commands, interrupt jobs, publish their
//! final states, `offline`, disconnect).
//!
//! [`run`] takes an already-bound listener and a shutdown future (mini-redis'
//! `server::run`), so the integration tests run the worker in-process on port 0 and
//! stop it with a token; `main` binds with [`bind`] and stops on a signal. The MQTT
//! side needs no listener: it connects out.
//!
//! May import anything: it is the top of the crate.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::auth::Tokens;
use crate::config::{Problem, Settings};
use crate::exec::borgmatic::{self, Version};
use crate::jobs::{JobEngine, Store};
use crate::mqtt::Mqtt;
use crate::redact::Redactor;
use crate::service::Service;

/// Every problem that keeps the worker from starting, and the borgmatic version when
/// the binary passed its check.
pub async fn preflight(settings: &Settings) -> (Vec<Problem>, Option<Version>) {
    let mut problems = settings.problems();
    // The policy file is read by `exec` (which depends on `config`, not the reverse).
    if settings.docker.exec_policy_file.is_some() {
        if let Err(e) = crate::exec::policy::ExecPolicy::from_settings(&settings.docker) {
            problems.push(Problem {
                key: "docker.exec_policy_file".into(),
                message: e.to_string(),
            });
        }
    }
    let version = match borgmatic::check_version(&settings.borgmatic.binary).await {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(Problem {
                key: "borgmatic.binary".into(),
                message: e.to_string(),
            });
            None
        }
    };
    (problems, version)
}

/// Binds the HTTP sidecar's `http.listen` address; `None` when it is `off`. Port 0
/// picks a free port: ask the listener for it.
pub async fn bind(settings: &Settings) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    match settings.http.listen.as_str() {
        "off" => Ok(None),
        addr => tokio::net::TcpListener::bind(addr)
            .await
            .map(Some)
            .with_context(|| format!("binding http.listen {addr}")),
    }
}

/// Runs the worker, serving HTTP on `listener` (from [`bind`]; `None`: no sidecar),
/// until `shutdown` completes. Bound before this is called, so a client that saw
/// `online` can use HTTP too.
pub async fn run(
    settings: Settings,
    listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let version = refuse_on_problems(&settings).await?;
    raise_open_file_limit();
    let max_connections = match listener {
        None => 0,
        Some(_) => crate::http::connection_cap(&settings.http)
            .map_err(|e| anyhow::anyhow!("refusing to start; http.max_connections: {e}"))?,
    };
    let settings = Arc::new(settings);
    let (engine, service) = core(&settings, version).await?;
    let metrics = crate::metrics::install();
    crate::metrics::spawn_job_metrics(engine.subscribe_reliable(false));
    let mut mqtt = Mqtt::start(&settings, service.clone())?;
    let background = CancellationToken::new();
    spawn_health(&settings, &service, &mqtt, &background);
    let http = listener.map(|listener| {
        let state = crate::http::AppState::new(
            service.clone(),
            settings.clone(),
            Some(mqtt.status.clone()),
            metrics,
            background.clone(),
        );
        spawn_http(listener, state, max_connections, &settings)
    });
    spawn_limit_sweep(service.clone(), background.clone());
    tracing::info!(
        base_topic = %settings.base_topic(),
        borgmatic = %version,
        "borgmatic-mqtt started"
    );

    shutdown.await;
    tracing::info!("shutting down");
    mqtt.stop_accepting().await;
    background.cancel();
    engine.shutdown().await;
    mqtt.shutdown().await;
    if let Some(h) = http {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), h).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The borgmatic version, or every reason not to start.
async fn refuse_on_problems(settings: &Settings) -> anyhow::Result<Version> {
    let (problems, version) = preflight(settings).await;
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        anyhow::bail!(
            "refusing to start; fix the configuration:\n{}",
            list.join("\n")
        );
    }
    version.context("borgmatic version unknown")
}

/// The state dir, job store, engine and service; orphans of an earlier run are
/// ended and interrupted jobs reconciled before anything can submit work.
async fn core(
    settings: &Arc<Settings>,
    version: Version,
) -> anyhow::Result<(JobEngine, Arc<Service>)> {
    secure_state_dir(&settings.state_dir)?;
    let store = Store::open(&settings.state_dir).context("opening the job store")?;
    crate::redact::register(settings.secret_values());
    let redactor = Redactor::new(settings.secret_values());
    let engine = JobEngine::new(store, settings.jobs.clone(), redactor)
        .context("loading the job history")?;
    let tokens = Tokens::from_settings(&settings.auth).context("tokens missing")?;
    let service = Arc::new(Service::new(
        settings.clone(),
        tokens,
        engine.clone(),
        version,
    ));
    crate::reconcile::at_start(settings, &service).await;
    Ok((engine, service))
}

/// Repository health probes, publishing each report retained.
fn spawn_health(
    settings: &Arc<Settings>,
    service: &Arc<Service>,
    mqtt: &Mqtt,
    stop: &CancellationToken,
) {
    let (sink, topics) = (mqtt.retained_sink(), mqtt.topics().clone());
    crate::health::spawn(
        settings.clone(),
        service.clone(),
        Arc::new(move |repo: &str, report: &serde_json::Value| {
            sink(topics.repo_health(repo), report.to_string())
        }),
        stop.clone(),
    );
}

/// The HTTP sidecar on `listener`, until `state`'s stop token is cancelled.
fn spawn_http(
    listener: tokio::net::TcpListener,
    state: crate::http::AppState,
    max_connections: usize,
    settings: &Settings,
) -> tokio::task::JoinHandle<()> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| settings.http.listen.clone(), |a| a.to_string());
    tracing::info!(addr = %addr, max_connections, "HTTP sidecar listening");
    tokio::spawn(async move {
        if let Err(e) = crate::http::serve(listener, state, max_connections).await {
            tracing::error!(error = %e, "the HTTP sidecar stopped");
        }
    })
}

/// Once a minute, principals back at a full quota are forgotten (bounded memory).
fn spawn_limit_sweep(service: Arc<Service>, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => service.shrink_limits(),
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// Creates `state_dir` as 0700 and tightens what is already there (an older version
/// left the job store and audit trail world-readable): the directory 0700, every
/// file directly in it 0600, every subdirectory 0700. Symlinks are left alone.
fn secure_state_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let ctx = || format!("securing state_dir {}", dir.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(ctx)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(ctx)?;
    for entry in std::fs::read_dir(dir).with_context(ctx)? {
        let entry = entry.with_context(ctx)?;
        let kind = entry.file_type().with_context(ctx)?;
        let mode = if kind.is_dir() {
            0o700
        } else if kind.is_file() {
            0o600
        } else {
            continue;
        };
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))
            .with_context(ctx)?;
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one: the default soft limit (often
/// 1024) is what a connection flood exhausts first, and the hard limit is what the
/// operator granted. The HTTP connection cap is then sized below it.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
