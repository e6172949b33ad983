//! Docker Engine access through its API (bollard), never the docker CLI: the local
//! socket or `tcp://` to a socket proxy, with the API version negotiated (hosts and
//! proxies speak different versions).
//!
//! Imports nothing of the crate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{
    DataUsageOptions, InspectContainerOptions, ListContainersOptions, ListVolumesOptions,
    StopContainerOptions,
};
use bollard::Docker;
use serde::Serialize;
use tokio::sync::Mutex;

/// Requests that take longer than this count as an engine that does not answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to the Docker engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DockerError {
    /// The engine does not answer (no socket, proxy down, timeout).
    #[error("the Docker engine is unavailable: {0}")]
    Unavailable(String),
    /// The engine answered 404: no such container (or object).
    #[error("no container {0}")]
    NoContainer(String),
    /// Any other refusal, with the engine's status code and message.
    #[error("Docker: {0}")]
    Other(String),
}

impl From<bollard::errors::Error> for DockerError {
    fn from(e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as E;
        match e {
            E::DockerResponseServerError {
                status_code: 404,
                message,
            } => DockerError::NoContainer(message),
            E::DockerResponseServerError {
                status_code,
                message,
            } => DockerError::Other(format!("{status_code}: {message}")),
            other => DockerError::Unavailable(other.to_string()),
        }
    }
}

/// A lazily connected engine: connecting and negotiating happen on first use and
/// again after a failure, so an engine that starts late is picked up.
#[derive(Clone)]
pub struct Engine {
    host: Option<String>,
    client: Arc<Mutex<Option<Docker>>>,
}

/// One container as `container/list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    /// The container's name, without Docker's leading `/`.
    pub name: String,
    /// The image it runs.
    pub image: Option<String>,
    /// `running`, `exited`, `restarting`, … as the engine reports it.
    pub state: Option<String>,
    /// The engine's human-readable status (`Up 3 hours`).
    pub status: Option<String>,
    /// `healthy`, `unhealthy`, `starting`, or absent without a health check.
    pub health: Option<String>,
}

/// One volume as `volume/list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeInfo {
    /// The volume's name.
    pub name: String,
    /// Where the volume's data lives on the host.
    pub mountpoint: String,
    /// `null` when not asked for or when the engine does not report it.
    pub size_bytes: Option<i64>,
}

impl Engine {
    /// `host` is `docker.host`; `None` means `DOCKER_HOST`, else the local socket.
    pub fn new(host: Option<String>) -> Self {
        Self {
            host,
            client: Arc::new(Mutex::new(None)),
        }
    }

    /// A connected client, negotiating the API version on first use.
    pub async fn client(&self) -> Result<Docker, DockerError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let docker = match &self.host {
            Some(h) => Docker::connect_with_host(h),
            None => Docker::connect_with_defaults(),
        }
        .map_err(|e| DockerError::Unavailable(e.to_string()))?
        .with_timeout(REQUEST_TIMEOUT);
        let docker = tokio::time::timeout(REQUEST_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| DockerError::Unavailable("no answer to version negotiation".into()))?
            .map_err(|e| DockerError::Unavailable(e.to_string()))?;
        *guard = Some(docker.clone());
        Ok(docker)
    }

    /// Forgets the connection (after an error), so the next use reconnects.
    pub async fn reset(&self) {
        *self.client.lock().await = None;
    }

    /// The engine's version, or why it does not answer.
    pub async fn ping(&self) -> Result<String, DockerError> {
        let c = self.client().await?;
        let r = tokio::time::timeout(Duration::from_secs(5), c.version()).await;
        match r {
            Ok(Ok(v)) => Ok(v.version.unwrap_or_default()),
            Ok(Err(e)) => {
                self.reset().await;
                Err(DockerError::Unavailable(e.to_string()))
            }
            Err(_) => {
                self.reset().await;
                Err(DockerError::Unavailable("no answer within 5s".into()))
            }
        }
    }

    /// Containers whose name starts with `prefix`, with state and health.
    pub async fn containers(&self, prefix: &str) -> Result<Vec<ContainerInfo>, DockerError> {
        let c = self.client().await?;
        let filters = HashMap::from([("name".to_string(), vec![format!("^/{prefix}")])]);
        let list = c
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        let mut out = Vec::new();
        for item in list {
            let name = item
                .names
                .unwrap_or_default()
                .into_iter()
                .map(|n| n.trim_start_matches('/').to_string())
                .find(|n| n.starts_with(prefix));
            let Some(name) = name else { continue };
            let health = c
                .inspect_container(&name, None::<InspectContainerOptions>)
                .await
                .ok()
                .and_then(|i| i.state)
                .and_then(|s| s.health)
                .and_then(|h| h.status)
                .map(|s| s.to_string());
            out.push(ContainerInfo {
                name,
                image: item.image,
                state: item.state.map(|s| s.to_string()),
                status: item.status,
                health: health.filter(|h| !h.is_empty() && h != "none"),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Volumes whose name starts with `prefix`; sizes from `system df` on request.
    pub async fn volumes(&self, prefix: &str, sizes: bool) -> Result<Vec<VolumeInfo>, DockerError> {
        let c = self.client().await?;
        let list = c.list_volumes(None::<ListVolumesOptions>).await?;
        let mut size_of: HashMap<String, i64> = HashMap::new();
        if sizes {
            // Engines speaking API 1.44+ list volume sizes under VolumeUsage.Items;
            // older ones answer in a shape this client no longer reads, and their
            // volumes show no size (`null`).
            let df = c.df(None::<DataUsageOptions>).await?;
            for item in df.volume_usage.and_then(|u| u.items).unwrap_or_default() {
                let name = item.get("Name").and_then(|n| n.as_str());
                let size = item.pointer("/UsageData/Size").and_then(|s| s.as_i64());
                if let (Some(name), Some(size)) = (name, size) {
                    size_of.insert(name.to_string(), size);
                }
            }
        }
        let mut out: Vec<VolumeInfo> = list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter(|v| v.name.starts_with(prefix))
            .map(|v| VolumeInfo {
                size_bytes: size_of.get(&v.name).copied().filter(|s| *s >= 0),
                name: v.name,
                mountpoint: v.mountpoint,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Whether a container runs (missing counts as not running).
    pub async fn is_running(&self, name: &str) -> Result<bool, DockerError> {
        let c = self.client().await?;
        match c
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => Ok(i.state.and_then(|s| s.running).unwrap_or(false)),
            Err(e) => match DockerError::from(e) {
                DockerError::NoContainer(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    /// A small text file inside a container (read with `cat` through exec; the path
    /// is ours, never a client's).
    pub async fn read_file(&self, container: &str, path: &str) -> Result<String, DockerError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        use futures_util::StreamExt;
        let c = self.client().await?;
        let exec = c
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(vec!["cat".to_string(), path.to_string()]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        let StartExecResults::Attached { mut output, .. } = c.start_exec(&exec.id, None).await?
        else {
            return Err(DockerError::Other("exec did not attach".into()));
        };
        let mut text = Vec::new();
        let mut errors = Vec::new();
        while let Some(chunk) = output.next().await {
            match chunk? {
                bollard::container::LogOutput::StdOut { message } => {
                    text.extend_from_slice(&message)
                }
                bollard::container::LogOutput::StdErr { message } => {
                    errors.extend_from_slice(&message)
                }
                _ => {}
            }
            if text.len() > 16 << 20 {
                return Err(DockerError::Other(format!("{path} is larger than 16 MiB")));
            }
        }
        let code = c.inspect_exec(&exec.id).await?.exit_code.unwrap_or(-1);
        if code != 0 {
            return Err(DockerError::NoContainer(format!(
                "{path} in {container}: {}",
                String::from_utf8_lossy(&errors).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// Stops a container, giving it `grace` to exit.
    pub async fn stop(&self, name: &str, grace: Duration) -> Result<(), DockerError> {
        let c = self.client().await?;
        c.stop_container(
            name,
            Some(StopContainerOptions {
                t: Some(grace.as_secs() as i32),
                ..Default::default()
            }),
        )
        .await?;
        Ok(())
    }
}
