//! Incoming publishes: commands (each gets exactly one response), Home Assistant's
//! birth message and button presses. Requests are handled concurrently, at most
//! `limits.max_in_flight` at once, so one slow command never delays another; a few
//! more wait in a short queue, beyond it they are `busy`.
//! May import: `service`, `command`, `commands` (the button presses), `auth`
//! (reading a bearer token), `metrics` (counting refusals), `outgoing`, `topics`,
//! `ha`, `summary`.

use std::sync::Arc;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ha::{publish_discovery, HaConfig};
use super::outgoing::{Out, Unsendable};
use super::{summary, topics, Topics, MAX_CORRELATION_BYTES};
use crate::command::{ApiError, Envelope, ErrorCode, RequestLimits, Response};
use crate::commands::Press;
use crate::service::{Request, Service};

/// A Home Assistant button press: the typed command it stands for, as the write
/// role (the broker ACL guards the topic), through the service's own gates.
async fn ha_button(out: &Out, topics: &Topics, service: &Service, repository: &str, action: &str) {
    let Some(press) = Press::parse(action) else {
        return;
    };
    let resp = service.handle_press(press, repository).await;
    if let Some(e) = &resp.error {
        tracing::warn!(code = e.code.as_str(), message = %e.message, "a Home Assistant button was refused");
        refused(out, topics, repository, action, e.code.as_str(), &e.message).await;
    }
}

/// The user pressed and nothing ran: tell them where they look (the event entity).
async fn refused(
    out: &Out,
    topics: &Topics,
    repository: &str,
    action: &str,
    code: &str,
    message: &str,
) {
    let event = summary::press_refused(action, code, message);
    if let Err(e) = out
        .publish(
            topics.repo_event(repository),
            QoS::AtLeastOnce,
            false,
            Bytes::from(event.to_string()),
            None,
        )
        .await
    {
        tracing::warn!(error = %e, "could not publish a refused press");
    }
}

/// What handling one incoming publish needs; shared by the concurrent handlers.
pub(super) struct Dispatch {
    pub out: Out,
    pub topics: Topics,
    pub service: Arc<Service>,
    pub ha: Arc<HaConfig>,
    pub limits: RequestLimits,
}

impl Dispatch {
    /// Handles one publish: a Home Assistant message, or a command that gets exactly
    /// one response (none when its topic cannot name a command).
    pub async fn handle(&self, p: Publish) {
        let Ok(topic) = std::str::from_utf8(&p.topic) else {
            return;
        };
        let ha = &self.ha;
        if ha.enabled && topic == ha.birth_topic() {
            // Home Assistant (re)started: it forgot non-retained state, so announce again.
            if p.payload.as_ref() == b"online" {
                let labels = self.service.borgmatic().labels();
                publish_discovery(&self.out, &self.topics, ha, &labels).await;
            }
            return;
        }
        if let Some((repository, action)) = self.topics.parse_ha_button(topic) {
            if ha.enabled && !p.retain {
                ha_button(&self.out, &self.topics, &self.service, repository, action).await;
            }
            return;
        }
        let Some(command) = self.topics.parse_command(topic) else {
            if self.topics.command_suffix(topic).is_some() {
                crate::metrics::request("mqtt", ErrorCode::Invalid.as_str());
                tracing::debug!(
                    topic = %crate::command::shorten(topic),
                    "a command topic that cannot name a command: not answered"
                );
            }
            return;
        };
        let props = p.properties.as_ref();
        let correlation = props.and_then(|props| props.correlation_data.clone());
        if correlation
            .as_ref()
            .is_some_and(|c| c.len() > MAX_CORRELATION_BYTES)
        {
            crate::metrics::request("mqtt", ErrorCode::Invalid.as_str());
            self.service.audit_refusal(
                crate::service::Transport::Mqtt,
                command,
                ErrorCode::Invalid,
            );
            let rid = Envelope::parse(&p.payload, &self.limits)
                .ok()
                .and_then(|e| e.request_id);
            let err = ApiError::invalid(format!(
                "correlation data is longer than {MAX_CORRELATION_BYTES} bytes; the request was not run"
            ));
            self.reply(command, props, None, Response::error(rid, err))
                .await;
            return;
        }
        let bearer = props.and_then(|props| {
            props
                .user_properties
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .and_then(|(_, v)| crate::auth::bearer(v))
        });
        let response = self
            .service
            .handle(Request {
                transport: crate::service::Transport::Mqtt,
                client: None,
                command,
                body: &p.payload,
                retained: p.retain,
                bearer,
                trusted: None,
            })
            .await;
        self.reply(command, props, correlation, response).await;
    }

    /// Where the answer to `command` goes: the client's Response Topic when allowed,
    /// else `<base>/response/<command>` for a known command and
    /// `<base>/response/unknown` for anything else — a client string is never echoed
    /// into a topic others read (a token published as `cmd/x/<token>` would be).
    fn reply_topic(&self, command: &str, props: Option<&PublishProperties>) -> String {
        props
            .and_then(|props| props.response_topic.as_deref())
            .filter(|t| self.topics.response_topic_allowed(t))
            .map(str::to_string)
            .unwrap_or_else(|| match crate::command::CommandName::parse(command) {
                Some(name) => self.topics.response(name.as_str()),
                None => self.topics.response(topics::UNKNOWN_COMMAND),
            })
    }

    /// Publishes the one response; an answer too large for the connection becomes a
    /// small `unavailable` answer instead.
    async fn reply(
        &self,
        command: &str,
        props: Option<&PublishProperties>,
        correlation: Option<Bytes>,
        response: Response,
    ) {
        let topic = self.reply_topic(command, props);
        let reply_props = PublishProperties {
            correlation_data: correlation,
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        let sent = self
            .out
            .publish(
                topic.clone(),
                QoS::AtLeastOnce,
                false,
                response.to_json().into(),
                Some(reply_props.clone()),
            )
            .await;
        let Err(Unsendable::TooLarge { size, max }) = sent else {
            if let Err(e) = sent {
                tracing::error!(error = %e, "could not publish a response");
            }
            return;
        };
        let small = Response::error(
            response.request_id.clone(),
            ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the answer is {size} bytes, more than the {max} bytes this MQTT connection carries in one message; ask for less (e.g. a smaller limit) or use the HTTP API"
                ),
            ),
        );
        if let Err(e) = self
            .out
            .publish(
                topic,
                QoS::AtLeastOnce,
                false,
                small.to_json().into(),
                Some(reply_props),
            )
            .await
        {
            tracing::error!(error = %e, "could not publish a response");
        }
    }

    /// A command that found the request queue full: answered `busy` without waiting
    /// (called from the connection loop, which must not wait).
    pub fn overflow(&self, p: &Publish) {
        let Some(command) = std::str::from_utf8(&p.topic)
            .ok()
            .and_then(|t| self.topics.parse_command(t))
        else {
            return;
        };
        crate::metrics::request("mqtt", ErrorCode::Busy.as_str());
        self.service
            .audit_refusal(crate::service::Transport::Mqtt, command, ErrorCode::Busy);
        let props = p.properties.as_ref();
        let rid = Envelope::parse(&p.payload, &self.limits)
            .ok()
            .and_then(|e| e.request_id);
        let resp = Response::error(
            rid,
            ApiError::new(
                ErrorCode::Busy,
                "the worker has too many requests in progress; retry shortly",
            ),
        );
        let correlation = props
            .and_then(|props| props.correlation_data.clone())
            .filter(|c| c.len() <= MAX_CORRELATION_BYTES);
        let reply_props = PublishProperties {
            correlation_data: correlation,
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        if let Err(e) = self.out.try_publish(
            self.reply_topic(command, props),
            QoS::AtLeastOnce,
            false,
            resp.to_json().into(),
            Some(reply_props),
        ) {
            tracing::warn!(error = %e, "could not answer a request the worker had no room for");
        }
    }
}

/// Takes command publishes off the queue and handles each in its own task, at most
/// `max_in_flight` at once. On stop, waits until those in flight have answered.
pub(super) async fn dispatch_task(
    mut requests: mpsc::Receiver<Publish>,
    dispatch: Arc<Dispatch>,
    max_in_flight: usize,
    stop: CancellationToken,
) {
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let tracker = TaskTracker::new();
    loop {
        let p = tokio::select! {
            p = requests.recv() => match p { Some(p) => p, None => break },
            _ = stop.cancelled() => break,
        };
        let permit = tokio::select! {
            p = in_flight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.cancelled() => break,
        };
        let d = dispatch.clone();
        tracker.spawn(async move {
            d.handle(p).await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}
