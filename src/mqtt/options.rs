//! Connection options: credentials, TLS, Last Will, packet size.

use std::time::Duration;

use anyhow::Context;
use rumqttc::v5::mqttbytes::v5::LastWill;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::MqttOptions;
use rumqttc::Transport;

use super::Topics;
use crate::config::Settings;

/// The largest packet the worker accepts: `limits.max_request_bytes` plus room for
/// the longest topic MQTT allows and for properties (and for a request a little over
/// the limit, which then gets a clear `invalid` answer instead of none).
pub(super) fn incoming_max(settings: &Settings) -> u32 {
    let room = 128 * 1024;
    u32::try_from(settings.limits.max_request_bytes + room).unwrap_or(u32::MAX)
}

pub(super) fn build(settings: &Settings, topics: &Topics) -> anyhow::Result<MqttOptions> {
    let m = &settings.mqtt;
    let client_id = format!("borgmatic-mqtt-{}", settings.node_id());
    let mut o = MqttOptions::new(client_id, m.host.clone(), m.port);
    o.set_keep_alive(Duration::from_secs(m.keep_alive_secs.max(5)));
    // A fresh session on every connect: commands published while the worker was
    // away are not replayed hours later; subscriptions are renewed on ConnAck.
    o.set_clean_start(true);
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
