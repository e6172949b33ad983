//! Every publish of the worker passes here and is checked against MQTT's limits
//! (topic length, no wildcards or NUL) and the largest packet the broker accepts (its
//! v5 CONNACK says) or `mqtt.max_packet_bytes`, whichever is smaller. rumqttc would
//! otherwise truncate an over-long topic's length on the wire, or fail the whole
//! connection on an oversize packet: the broker would drop the worker, and whatever
//! was in flight with it. Callers decide what to send instead (a small error answer,
//! a result without its data) or log and skip.
//!
//! Imports nothing of the crate.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ClientError};

use super::outbox::{Tag, Tracker};
use super::topics;

/// Why a message was not handed to the client.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unsendable {
    #[error("the topic {0}")]
    Topic(&'static str),
    #[error("the message is {size} bytes; the connection accepts at most {max}")]
    TooLarge { size: usize, max: u32 },
    #[error("the MQTT client refused the message: {0}")]
    Client(Box<ClientError>),
}

/// The packet limit in force: the broker's (0 until a CONNACK named one) and ours.
#[derive(Debug)]
pub(super) struct PacketLimit {
    broker: AtomicU32,
    own: u32,
}

impl PacketLimit {
    pub fn new(own: u32) -> Self {
        Self {
            broker: AtomicU32::new(0),
            own,
        }
    }

    /// Records the Maximum Packet Size of a CONNACK (`None`: the broker has none).
    pub fn set_broker(&self, max: Option<u32>) {
        self.broker.store(max.unwrap_or(0), Ordering::Release);
    }

    pub fn get(&self) -> u32 {
        match self.broker.load(Ordering::Acquire) {
            0 => self.own,
            b => b.min(self.own),
        }
    }
}

/// The client, with the checks in front of it.
#[derive(Clone)]
pub(super) struct Out {
    pub client: AsyncClient,
    pub limit: Arc<PacketLimit>,
    pub tracker: Arc<Tracker>,
}

impl Out {
    /// Whether this message can go out as one valid packet.
    pub fn check(
        &self,
        topic: &str,
        qos: QoS,
        payload: &Bytes,
        props: Option<&PublishProperties>,
    ) -> Result<(), Unsendable> {
        topics::publishable(topic).map_err(Unsendable::Topic)?;
        let mut p = Publish::new(topic, qos, payload.clone(), props.cloned());
        // The size with a packet id, as it goes out at QoS 1.
        p.pkid = 1;
        let size = p.size();
        let max = self.limit.get();
        if size > max as usize {
            return Err(Unsendable::TooLarge { size, max });
        }
        Ok(())
    }

    /// Checks, then queues in the client (waits while its queue is full).
    pub async fn publish(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Bytes,
        props: Option<PublishProperties>,
    ) -> Result<(), Unsendable> {
        self.send(Tag::Plain, topic, qos, retain, payload, props)
            .await
    }

    /// Like [`Self::publish`], tagged (a log line, a kept message).
    pub async fn send(
        &self,
        tag: Tag,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Bytes,
        props: Option<PublishProperties>,
    ) -> Result<(), Unsendable> {
        self.check(&topic, qos, &payload, props.as_ref())?;
        loop {
            let room = self.tracker.space.notified();
            match self.hand_over(tag.clone(), &topic, qos, retain, &payload, &props) {
                Err(Unsendable::Client(_)) if !self.tracker.closed.load(Ordering::Acquire) => {}
                r => return r,
            }
            // The client's queue is full: wait until the event loop takes one.
            tokio::select! {
                _ = room => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
    }

    /// Checks, then queues in the client without waiting (fails when its queue is full).
    pub fn try_publish(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Bytes,
        props: Option<PublishProperties>,
    ) -> Result<(), Unsendable> {
        self.try_send(Tag::Plain, topic, qos, retain, payload, props)
    }

    /// Like [`Self::try_publish`], tagged.
    pub fn try_send(
        &self,
        tag: Tag,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Bytes,
        props: Option<PublishProperties>,
    ) -> Result<(), Unsendable> {
        self.check(&topic, qos, &payload, props.as_ref())?;
        self.hand_over(tag, &topic, qos, retain, &payload, &props)
    }

    /// One non-blocking hand-over, in the tracker's order.
    fn hand_over(
        &self,
        tag: Tag,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &Bytes,
        props: &Option<PublishProperties>,
    ) -> Result<(), Unsendable> {
        self.tracker
            .send(tag, || {
                match props {
                    Some(props) => self.client.try_publish_with_properties(
                        topic,
                        qos,
                        retain,
                        payload.clone(),
                        props.clone(),
                    ),
                    None => self.client.try_publish(topic, qos, retain, payload.clone()),
                }
                .map_err(Box::new)
            })
            .map(|_| ())
            .map_err(Unsendable::Client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smaller_limit_applies() {
        let l = PacketLimit::new(1000);
        assert_eq!(l.get(), 1000);
        l.set_broker(Some(500));
        assert_eq!(l.get(), 500);
        l.set_broker(Some(5000));
        assert_eq!(l.get(), 1000);
        l.set_broker(None);
        assert_eq!(l.get(), 1000);
    }
}
