//! Where a repository lives, parsed from a borg repository path, and a printable
//! form of it without credentials.
//!
//! Imports nothing of the crate (the sibling `redact` shortens other URLs).

use std::path::PathBuf;

use super::redact::reduce_url;

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on this machine.
    Local(PathBuf),
    /// `ssh://[user@]host[:port]/path` or `[user@]host:path`.
    Ssh {
        /// The SSH user, when the path names one.
        user: Option<String>,
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// The SSH port (22 unless given).
        port: u16,
        /// The repository's path on the host.
        path: String,
    },
    /// Anything else (e.g. `s3://`, which borg 2 may support).
    Other(String),
}

impl Location {
    /// A printable form with no credentials.
    pub fn display(&self) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::Ssh {
                user,
                host,
                port,
                path,
            } => {
                let user = user.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
                format!("ssh://{user}{host}:{port}{path}")
            }
            Location::Other(s) => reduce_url(s),
        }
    }
}

/// Parses a borg repository path into where it lives.
pub fn parse_location(path: &str) -> Location {
    if let Some(rest) = path.strip_prefix("ssh://") {
        let (authority, repo_path) = rest.split_once('/').unwrap_or((rest, ""));
        // Credentials (`user:pw@`) are dropped here; only the user is kept.
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.split(':').next().unwrap_or(u).to_string()), h),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport);
        return Location::Ssh {
            user,
            host,
            port,
            path: format!("/{repo_path}"),
        };
    }
    if path.starts_with('/')
        || path.starts_with("file://")
        || path.starts_with('~')
        || !path.contains(':')
    {
        return Location::Local(PathBuf::from(path.trim_start_matches("file://")));
    }
    if path.contains("://") {
        return Location::Other(path.to_string());
    }
    // scp-style `[user@]host:path`
    let (authority, repo_path) = path.split_once(':').unwrap_or((path, ""));
    let (user, host) = match authority.split_once('@') {
        Some((u, h)) => (Some(u.to_string()), h.to_string()),
        None => (None, authority.to_string()),
    };
    Location::Ssh {
        user,
        host,
        port: 22,
        path: repo_path.to_string(),
    }
}

fn split_host_port(hostport: &str) -> (String, u16) {
    if let Some(rest) = hostport.strip_prefix('[') {
        // [ipv6]:port
        if let Some((h, p)) = rest.split_once(']') {
            let port = p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(22);
            return (h.to_string(), port);
        }
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            (h.to_string(), p.parse().unwrap_or(22))
        }
        _ => (hostport.to_string(), 22),
    }
}
