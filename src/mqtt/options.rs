//! Connection options: credentials, TLS, Last Will, packet size.
//!
//! Imports `config` only.

use std::time::Duration;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use rumqttc::v5::mqttbytes::v5::LastWill;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::MqttOptions;
use rumqttc::Transport;

use super::Topics;
use crate::config::Settings;

/// How long the broker keeps the worker's session after a disconnect.
pub(super) const SESSION_EXPIRY_SECS: u32 = 300;

/// The largest packet the worker accepts: `limits.max_request_bytes` plus room for
/// the longest topic MQTT allows and for properties (and for a request a little over
/// the limit, which then gets a clear `invalid` answer instead of none).
pub(super) fn incoming_max(settings: &Settings) -> u32 {
    let room = 128 * 1024;
    u32::try_from(settings.limits.max_request_bytes + room).unwrap_or(u32::MAX)
}

pub(super) fn build(settings: &Settings, topics: &Topics) -> anyhow::Result<MqttOptions> {
    let m = &settings.mqtt;
    let client_id = client_id(settings)?;
    let mut o = MqttOptions::new(client_id, m.host.clone(), m.port);
    o.set_keep_alive(Duration::from_secs(m.keep_alive_secs.max(5)));
    // A persistent session: a broker keeps the worker's subscriptions and what it
    // queued for it (commands sent during a short outage, unacknowledged
    // deliveries) for SESSION_EXPIRY_SECS after a disconnect, so a QoS 1 command
    // is redelivered after a worker restart (request-id dedup makes that safe).
    // Longer outages end the session: commands are not replayed hours later.
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(SESSION_EXPIRY_SECS));
    // What the broker may send us: the largest request plus a topic and properties.
    // A v5 broker drops larger messages for this client instead of delivering them,
    // so a flood of huge payloads never reaches the worker's memory.
    o.set_max_packet_size(Some(incoming_max(settings)));
    // rumqttc sizes its table of unacknowledged publishes by this limit up front
    // (65,535 entries by default, megabytes at idle); the broker's Receive Maximum
    // lowers it further.
    o.set_outgoing_inflight_upper_limit(1024);
    // Requests and responses are small single packets: without TCP_NODELAY each
    // can wait for a delayed ACK (40 ms on Linux) before it leaves.
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    o.set_network_options(net);
    o.set_last_will(LastWill::new(
        topics.status(),
        "offline",
        QoS::AtLeastOnce,
        true,
        None,
    ));
    if let Some(user) = &m.username {
        let pw = m
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        o.set_credentials(user.clone(), pw);
    }
    if m.tls {
        let ca_file = m.ca_file.as_ref().context("mqtt.tls needs mqtt.ca_file")?;
        let ca = std::fs::read(ca_file)
            .with_context(|| format!("reading mqtt.ca_file {}", ca_file.display()))?;
        let client_auth = match (&m.client_cert_file, &m.client_key_file) {
            (Some(c), Some(k)) => Some((
                std::fs::read(c).with_context(|| format!("reading {}", c.display()))?,
                std::fs::read(k).with_context(|| format!("reading {}", k.display()))?,
            )),
            _ => None,
        };
        o.set_transport(Transport::tls(ca, client_auth, None));
    }
    Ok(o)
}

/// The file under `state_dir` that keeps the worker's random client id.
pub const CLIENT_ID_FILE: &str = "mqtt_client_id";

/// `mqtt.client_id`, else a random id made once and kept (mode 0600) in
/// `<state_dir>/mqtt_client_id`. It was `borgmatic-mqtt-<node>`: any broker user
/// could connect with it and so disconnect the worker (a broker closes the older of
/// two connections with one id). Kept across restarts so that a persistent session
/// stays the worker's.
fn client_id(settings: &Settings) -> anyhow::Result<String> {
    if let Some(id) = &settings.mqtt.client_id {
        return Ok(id.clone());
    }
    let file = settings.state_dir.join(CLIENT_ID_FILE);
    if let Some(id) = read_id(&file)? {
        return Ok(id);
    }
    let id = format!("borgmatic-mqtt-{}", uuid::Uuid::new_v4().simple());
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .and_then(|mut f| {
            f.write_all(id.as_bytes())?;
            f.sync_all()
        });
    match written {
        Ok(()) => Ok(id),
        // Another start raced us: use what it wrote.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_id(&file)?.context("the MQTT client id file is empty")
        }
        Err(e) => Err(e).with_context(|| format!("writing {}", file.display())),
    }
}

/// The kept id, if the file exists; an unusable file is an error, not a new id (a
/// new id would leave the old persistent session behind).
fn read_id(file: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let id = text.trim();
            anyhow::ensure!(
                id.len() >= 16 && id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic()),
                "{} does not hold a usable MQTT client id; delete it to make a new one",
                file.display()
            );
            Ok(Some(id.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Settings {
        Settings {
            state_dir: dir.to_path_buf(),
            ..Settings::default()
        }
    }

    #[test]
    fn the_client_id_is_random_kept_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let first = client_id(&settings(a.path())).unwrap();
        assert_eq!(client_id(&settings(a.path())).unwrap(), first);
        assert_ne!(client_id(&settings(b.path())).unwrap(), first);
        assert!(first.len() >= 40, "{first}");
        let mode = std::fs::metadata(a.path().join(CLIENT_ID_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut s = settings(a.path());
        s.mqtt.client_id = Some("configured-client-id-1".into());
        assert_eq!(client_id(&s).unwrap(), "configured-client-id-1");
        std::fs::write(a.path().join(CLIENT_ID_FILE), "x").unwrap();
        assert!(client_id(&settings(a.path())).is_err());
    }
}
