//! How a request arrived: filled in by the transport adapters, read by the
//! pipeline. May import: `domain`.

use crate::domain::Role;

/// Which adapter a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// MQTT: a request published on a command topic.
    Mqtt,
    /// HTTP: a request to the sidecar's REST mirror.
    Http,
}

impl Transport {
    /// The name written to the audit trail and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Mqtt => "mqtt",
            Transport::Http => "http",
        }
    }
}

/// How a request arrived; the adapters fill it in.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The adapter it came through.
    pub transport: Transport,
    /// Who sent it, as far as the transport knows (HTTP peer address); MQTT brokers
    /// do not tell, so it is `None` there.
    pub client: Option<&'a str>,
    /// `group/action`.
    pub command: &'a str,
    /// The request's JSON body, unparsed.
    pub body: &'a [u8],
    /// MQTT retain flag; always false over HTTP.
    pub retained: bool,
    /// A token presented outside the body (MQTT v5 user property, HTTP header).
    pub bearer: Option<&'a str>,
    /// Set by an adapter whose channel is authorised by other means (Home Assistant
    /// buttons, guarded by the broker ACL): the request has this role, no token.
    pub trusted: Option<Role>,
}
