//! Settings of the transports and who may use them: `[mqtt]`, `[http]`,
//! `[homeassistant]` and `[auth]`. Plain data with defaults; imports only
//! [`super::Secret`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

/// `[mqtt]`: the broker connection and the topic tree's root.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    /// The broker's host name or address.
    pub host: String,
    /// The broker's port (1883; usually 8883 with TLS).
    pub port: u16,
    /// Broker user name; no credentials are sent when unset.
    pub username: Option<String>,
    /// Broker password (sent only with `username`).
    pub password: Option<Secret>,
    /// A file holding `password` (e.g. a Docker secret); set one of the two.
    pub password_file: Option<PathBuf>,
    /// Connect with TLS (needs `ca_file`).
    pub tls: bool,
    /// PEM file of the CA the broker's certificate is checked against.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that want one (with `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// PEM key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// Defaults to `borgmatic/<node_id>`.
    pub base_topic: Option<String>,
    /// Defaults to the host name, lower-cased, `[a-z0-9_-]` only.
    pub node_id: Option<String>,
    /// Keep-alive interval in seconds.
    pub keep_alive_secs: u64,
    /// Largest packet the worker sends (a larger answer becomes a small error answer;
    /// the broker's own limit, from its v5 CONNACK, applies too). What it accepts
    /// follows from `limits.max_request_bytes`.
    pub max_packet_bytes: u32,
    /// Ceiling of the reconnect backoff, in seconds.
    pub reconnect_max_secs: u64,
    /// The MQTT client id. Unset: a random id made once and kept in
    /// `<state_dir>/mqtt_client_id`, so no other broker user can guess it and take
    /// over the worker's session.
    pub client_id: Option<String>,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 1883,
            username: None,
            password: None,
            password_file: None,
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            base_topic: None,
            node_id: None,
            keep_alive_secs: 30,
            max_packet_bytes: 64 * 1024 * 1024,
            reconnect_max_secs: 30,
            client_id: None,
        }
    }
}

/// `[auth]`: the tokens of the three roles (read < write < admin).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Token of the read role (lists, info, state).
    pub read_token: Option<Secret>,
    /// A file holding `read_token`; set one of the two.
    pub read_token_file: Option<PathBuf>,
    /// Token of the write role (backups, restores, and every read command).
    pub write_token: Option<Secret>,
    /// A file holding `write_token`; set one of the two.
    pub write_token_file: Option<PathBuf>,
    /// Token of the admin role; admin commands are refused while it is unset.
    pub admin_token: Option<Secret>,
    /// A file holding `admin_token`; set one of the two.
    pub admin_token_file: Option<PathBuf>,
    /// Accept `borg_passphrase` / `ssh_passphrase` in requests.
    pub allow_request_secrets: bool,
}

/// `[http]`: the HTTP sidecar (REST mirror, event stream, health, metrics).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// `host:port`, or `off`.
    pub listen: String,
    /// When set, every API request must carry `X-From-NodeRed: <value>`.
    pub from_header: Option<Secret>,
    /// A file holding `from_header`; set one of the two.
    pub from_header_file: Option<PathBuf>,
    /// Largest request body accepted.
    pub body_limit_bytes: usize,
    /// Seconds a request (not a stream) may take.
    pub request_timeout_secs: u64,
    /// `/metrics` needs the read token when true.
    pub metrics_require_token: bool,
    /// Seconds a client has to send a request's headers (also how long an idle
    /// keep-alive connection waits for its next request).
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may go without moving a byte either way before it is
    /// closed (a reader that stopped reading, a stalled stream); at least
    /// `request_timeout_secs` + 5.
    pub idle_timeout_secs: u64,
    /// Open connections at once (event streams included); more are refused at once.
    /// Lowered at start-up so that this plus `fd_reserve` fits the open-file limit.
    pub max_connections: usize,
    /// Server-Sent Event streams open at once; more get 503.
    pub max_event_streams: usize,
    /// File descriptors kept free of HTTP connections, for jobs, the job store and
    /// the broker connection.
    pub fd_reserve: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8484".into(),
            from_header: None,
            from_header_file: None,
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            metrics_require_token: false,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 1024,
            max_event_streams: 512,
            fd_reserve: 256,
        }
    }
}

/// Home Assistant MQTT discovery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantSettings {
    /// Publish discovery configs and accept button presses on `<base>/ha/…`.
    pub discovery: bool,
    /// Home Assistant's discovery prefix.
    pub prefix: String,
    /// The devices' "Visit" link (default: the HTTP sidecar on a specific address).
    pub configuration_url: Option<String>,
}

impl Default for HomeAssistantSettings {
    fn default() -> Self {
        Self {
            discovery: false,
            prefix: "homeassistant".into(),
            configuration_url: None,
        }
    }
}
