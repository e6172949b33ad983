//! The connection layer under the router. `axum::serve` accepts every connection
//! and waits forever for its headers, so half-sent requests used to pile up until
//! the worker ran out of file descriptors and could not start a job. Here:
//! - at most `max_connections` connections are open at once; one more is answered
//!   503 and closed at once, without a task;
//! - a connection that does not send a request's headers within
//!   `http.header_read_timeout_secs` (the first request, or the next one on a
//!   kept-alive connection) is closed;
//! - a connection that moves no byte either way for `http.idle_timeout_secs` (a
//!   client that stopped reading, a stalled stream) is closed.
//!
//! [`connection_cap`] sizes `max_connections` so that the connections plus
//! `http.fd_reserve` fit the process's open-file limit.
//!
//! Imports `config::HttpSettings` only.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::config::HttpSettings;

/// What a connection over the cap gets before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
retry-after: 5\r\n\
connection: close\r\n\
content-length: 26\r\n\
\r\n\
too many open connections\n";

/// The timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl ConnLimits {
    /// The settings, with the idle timeout raised above the request timeout (a
    /// handler may work that long without a byte moving).
    pub fn new(http: &HttpSettings, max_connections: usize) -> Self {
        let idle = http
            .idle_timeout_secs
            .max(http.request_timeout_secs.saturating_add(5));
        Self {
            max_connections,
            header_read_timeout: Duration::from_secs(http.header_read_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(idle),
        }
    }
}

/// How many connections may be open: `http.max_connections`, lowered so that the
/// connections and `http.fd_reserve` fit the current open-file limit. `Err` when
/// the limit leaves no room at all (start-up refuses, naming the fix).
pub fn connection_cap(http: &HttpSettings) -> Result<usize, String> {
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    cap_for(http.max_connections, http.fd_reserve, soft)
}

/// [`connection_cap`] for a given open-file limit.
pub fn cap_for(max_connections: usize, reserve: u64, limit: u64) -> Result<usize, String> {
    /// Fewer than this and the HTTP sidecar is not worth starting.
    const MIN_CONNECTIONS: u64 = 8;
    let room = limit.saturating_sub(reserve).saturating_sub(1);
    if room < MIN_CONNECTIONS {
        return Err(format!(
            "the open-file limit ({limit}) leaves fewer than {MIN_CONNECTIONS} connections after \
             http.fd_reserve ({reserve}); raise the limit (`ulimit -n`, docker `ulimits: nofile`) \
             or lower http.fd_reserve"
        ));
    }
    Ok(max_connections.min(usize::try_from(room).unwrap_or(usize::MAX)))
}

/// Accepts connections until `shutdown` fires, then lets the open ones finish
/// their current request (event streams end on the same signal).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if out_of_resources(&e) {
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "HTTP: cannot accept a connection");
                        last_warning = Some(Instant::now());
                    }
                    // The pending connection stays in the backlog; do not spin on it.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!("bmqtt_http_connections_refused_total").increment(1);
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(connection(
            stream,
            peer,
            router.clone(),
            permit,
            limits,
            shutdown.clone(),
        ));
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Answers 503 and closes, never waiting: the socket buffer of a new connection
/// has room for these few bytes. What the client already sent is read first, so
/// that closing sends FIN rather than RST (which could discard the answer).
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(REFUSAL);
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        match stream.try_read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    drop(stream);
}

fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno::EMFILE | libc_errno::ENFILE | libc_errno::ENOBUFS | libc_errno::ENOMEM)
    )
}

/// The errno values `accept` reports when the process or system is out of
/// descriptors or memory.
mod libc_errno {
    pub const EMFILE: i32 = nix::errno::Errno::EMFILE as i32;
    pub const ENFILE: i32 = nix::errno::Errno::ENFILE as i32;
    pub const ENOBUFS: i32 = nix::errno::Errno::ENOBUFS as i32;
    pub const ENOMEM: i32 = nix::errno::Errno::ENOMEM as i32;
}

/// Serves one connection; the permit is its slot under the cap.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    _permit: OwnedSemaphorePermit,
    limits: ConnLimits,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().call(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let left = limits.idle_timeout.saturating_sub(activity.idle_for());
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = tokio::time::sleep(left) => {
                if activity.idle_for() >= limits.idle_timeout {
                    tracing::debug!(%peer, "closing an HTTP connection idle for {:?}", limits.idle_timeout);
                    metrics::counter!("bmqtt_http_connections_idle_closed_total").increment(1);
                    return;
                }
            }
            _ = shutdown.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// When a connection last moved a byte.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A stream that notes each read or write that moved bytes.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_free() {
        assert_eq!(cap_for(1024, 256, 20_000), Ok(1024));
        assert_eq!(cap_for(1024, 256, 1024), Ok(767));
        assert!(cap_for(1024, 256, 260).is_err());
    }

    #[test]
    fn the_refusal_is_a_complete_response() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
