//! Messages to the client: [`Connection::deliver`], the in-flight window, topic aliases,
//! and the client's PUBACK/PUBREC/PUBCOMP.

use std::time::Instant;

use halyard_codec::{
    MqttString, Packet, PubResponse, PublishProperties, PublishView, QoS, ReasonCode,
    publish_encoded_len,
};

use super::{Connection, State};
use crate::message::Delivery;
use crate::queue::Dropped;
use crate::session::OutState;

/// What [`Connection::deliver`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverOutcome {
    /// Encoded into the output: QoS 0 sent, or QoS 1/2 sent and now in flight.
    Sent,
    /// Put in the session's pending queue (window full, output backlog, earlier messages
    /// queued, or the connection is closed and the session kept it); sent when possible.
    Queued,
    /// Not delivered and never will be (counted in the stats).
    Dropped(Dropped),
}

/// What [`Connection::send_new`] did with a message it did not drop.
enum Sent {
    /// Encoded and in flight.
    Now,
    /// At the front of the session's queue: its packet identifier is in use.
    Waiting,
}

impl Connection {
    /// Delivers a message routed to this client.
    ///
    /// Connected: expired messages are dropped [MQTT-3.3.2-5]. QoS 0 is sent at once unless
    /// the output backlog exceeds [`crate::SessionConfig::max_pending_output`] (dropped).
    /// QoS 1/2 gets a packet identifier and is sent when the in-flight window
    /// (min([`crate::SessionConfig::max_inflight`], client Receive Maximum) [MQTT-3.3.4-9])
    /// has room and nothing is queued before it; otherwise it waits in the session queue.
    /// A PUBLISH larger than the client's Maximum Packet Size is dropped as if delivered
    /// [MQTT-3.1.2-25]. The PUBLISH carries the remaining Message Expiry Interval
    /// [MQTT-3.3.2-6], the forwarded properties unchanged [MQTT-3.3.2-17] [MQTT-3.3.2-18]
    /// [MQTT-3.3.2-20], and the subscription identifiers (5.0).
    ///
    /// Outgoing topic aliases (5.0, when the client's Topic Alias Maximum > 0): the first
    /// min(client maximum, [`crate::SessionConfig::max_topic_alias_out`]) distinct topics
    /// get aliases 1, 2, ... for the life of the connection; the first PUBLISH on such a
    /// topic carries topic and alias, later ones an empty topic and the alias. Other topics
    /// are sent in full (first-N, no eviction: no re-mapping races, no per-message cost).
    ///
    /// Closed, with a session that will be kept (expiry > 0): as
    /// [`crate::Session::enqueue`]. Closed otherwise, or before the CONNECT is accepted:
    /// [`Dropped::NotConnected`].
    ///
    /// Drops are counted in [`crate::ConnectionStats::dropped`], except those of the session
    /// queue (full, expired while queued, refused offline), which
    /// [`crate::SessionStats::dropped`] counts.
    pub fn deliver(&mut self, now: Instant, delivery: Delivery) -> DeliverOutcome {
        self.last_now = self.last_now.max(now);
        match self.state {
            State::Connected => {
                let outcome = self.deliver_connected(now, delivery);
                // Queue drops are counted by the session itself.
                if let DeliverOutcome::Dropped(d) = outcome
                    && d != Dropped::QueueFull
                {
                    self.stats_mut().dropped.count(d);
                }
                outcome
            }
            State::Closed => match self.session.as_mut().filter(|s| s.expiry_interval() > 0) {
                Some(s) => match s.enqueue(now, delivery) {
                    Ok(()) => DeliverOutcome::Queued,
                    Err(d) => DeliverOutcome::Dropped(d),
                },
                None => DeliverOutcome::Dropped(Dropped::NotConnected),
            },
            State::AwaitConnect | State::AwaitDecision => {
                self.stats_mut().dropped.count(Dropped::NotConnected);
                DeliverOutcome::Dropped(Dropped::NotConnected)
            }
        }
    }

    fn window(&self) -> usize {
        usize::from(self.cfg.max_inflight.max(1).min(self.peer.receive_maximum))
    }

    fn output_full(&self) -> bool {
        self.tx.len() >= self.cfg.max_pending_output
    }

    fn deliver_connected(&mut self, now: Instant, delivery: Delivery) -> DeliverOutcome {
        if delivery.message.is_expired(now) {
            return DeliverOutcome::Dropped(Dropped::Expired);
        }
        if delivery.qos == QoS::AtMostOnce {
            if self.output_full() {
                return DeliverOutcome::Dropped(Dropped::OutputFull);
            }
            return match self.send_publish(now, &delivery, 0, false) {
                Ok(()) => DeliverOutcome::Sent,
                Err(d) => DeliverOutcome::Dropped(d),
            };
        }
        if self.session.as_ref().is_some_and(|s| s.has_pending()) {
            // Older messages first (normally a no-op: the queue is pumped whenever the
            // window or the output frees).
            self.pump(now);
        }
        let Some(has_pending) = self.session.as_ref().map(|s| s.has_pending()) else {
            return DeliverOutcome::Dropped(Dropped::NotConnected);
        };
        if has_pending
            || self.resend_pending
            || self.inflight_sent >= self.window()
            || self.output_full()
        {
            let Some(session) = self.session.as_mut() else {
                return DeliverOutcome::Dropped(Dropped::NotConnected);
            };
            self.stats.get_or_insert_with(Box::default).queued += 1;
            return match session.push_pending(delivery) {
                Ok(()) => DeliverOutcome::Queued,
                Err(d) => DeliverOutcome::Dropped(d),
            };
        }
        match self.send_new(now, delivery, false) {
            Ok(Sent::Now) => DeliverOutcome::Sent,
            Ok(Sent::Waiting) => {
                self.stats_mut().queued += 1;
                DeliverOutcome::Queued
            }
            Err(d) => DeliverOutcome::Dropped(d),
        }
    }

    /// Sends a QoS 1/2 message for the first time: checks the size, assigns a packet id,
    /// records it in flight and encodes it. When its packet id is in use it waits in the
    /// queue ([`Sent::Waiting`]): back at the front when `popped` (just taken from there),
    /// else appended (the queue is then empty).
    fn send_new(
        &mut self,
        now: Instant,
        delivery: Delivery,
        popped: bool,
    ) -> Result<Sent, Dropped> {
        if self.peer_limits_size()
            && self.publish_len(now, &delivery) > self.peer.max_packet_size as usize
        {
            return Err(Dropped::TooLarge);
        }
        let Some(session) = self.session.as_mut() else {
            return Err(Dropped::NotConnected);
        };
        let Some(id) = session.free_packet_id(&delivery) else {
            // Its fixed identifier (or every identifier) is in use: wait at the front.
            if popped {
                session.unpop_pending(delivery);
            } else {
                session.push_pending(delivery)?;
            }
            return Ok(Sent::Waiting);
        };
        // Encoded from the delivery before it moves into the window: no copy of it, and
        // nothing to undo when it cannot be sent.
        self.send_publish(now, &delivery, id, false)?;
        if let Some(s) = self.session.as_mut() {
            s.insert_outgoing(id, delivery, true);
            self.inflight_sent += 1;
        }
        Ok(Sent::Now)
    }

    fn mark_sent(&mut self, id: u16) {
        if let Some(f) = self.session.as_mut().and_then(|s| s.outgoing.get_mut(id))
            && !f.sent_here
        {
            f.sent_here = true;
            f.ever_sent = true;
            self.inflight_sent += 1;
        }
    }

    /// Whether the client set a Maximum Packet Size below the protocol's: only then can an
    /// encodable PUBLISH be too large for it, and only then is its size measured.
    pub(crate) fn peer_limits_size(&self) -> bool {
        self.peer.max_packet_size < halyard_codec::MAX_PACKET_SIZE
    }

    /// Size of the PUBLISH for `delivery` with the full topic and no alias (the largest
    /// form), for the Maximum Packet Size check before a packet id is spent.
    fn publish_len(&self, now: Instant, delivery: &Delivery) -> usize {
        let properties = self.publish_properties(now, delivery, None);
        let view = publish_view(delivery, &properties, 1, false, true);
        publish_encoded_len(&view, self.version)
    }

    /// The PUBLISH properties of `d` for this connection (none for 3.1.1).
    fn publish_properties(
        &self,
        now: Instant,
        d: &Delivery,
        alias: Option<u16>,
    ) -> PublishProperties {
        if !self.is_v5() {
            return PublishProperties::default();
        }
        let m = &d.message;
        PublishProperties {
            payload_format_indicator: m.properties.payload_format_indicator,
            message_expiry_interval: m.remaining_expiry_secs(now),
            topic_alias: alias,
            response_topic: m.properties.response_topic.clone(),
            correlation_data: m.properties.correlation_data.clone(),
            subscription_identifiers: d.subscription_ids.to_vec(),
            content_type: m.properties.content_type.clone(),
            user_properties: m.properties.user_properties.clone(),
        }
    }

    /// The alias to use for `topic`: `(alias, send_topic, newly_assigned)`.
    /// How many outgoing topic aliases this connection may use.
    pub(crate) fn alias_limit(&self) -> u16 {
        self.peer
            .topic_alias_maximum
            .min(self.cfg.max_topic_alias_out)
    }

    fn alias_for(&mut self, topic: &MqttString) -> (Option<u16>, bool, bool) {
        let limit = self.alias_limit();
        if !self.is_v5() || limit == 0 {
            return (None, true, false);
        }
        let aliases = &mut self.rare_mut().aliases_out;
        if let Some(&a) = aliases.get(topic) {
            return (Some(a), false, false);
        }
        if aliases.len() < usize::from(limit) {
            // Bounded by `limit`, so the cast cannot truncate.
            let a = (aliases.len() + 1) as u16;
            aliases.insert(topic.clone(), a);
            return (Some(a), true, true);
        }
        (None, true, false)
    }

    /// Encodes one PUBLISH (alias applied) if it fits the client's Maximum Packet Size.
    fn send_publish(
        &mut self,
        now: Instant,
        d: &Delivery,
        packet_id: u16,
        dup: bool,
    ) -> Result<(), Dropped> {
        let variant = self.cache_variant(d, dup);
        if let Some(v) = variant
            && self.state != State::Closed
            && self.send_cached(&d.message, v, packet_id)
        {
            self.stats_mut().count_publish_out(d.qos);
            return Ok(());
        }
        let (alias, with_topic, new_alias) = self.alias_for(&d.message.topic);
        let properties = self.publish_properties(now, d, alias);
        let view = publish_view(d, &properties, packet_id, dup, with_topic);
        let fits = !self.peer_limits_size()
            || publish_encoded_len(&view, self.version) <= self.peer.max_packet_size as usize;
        let start = self.tx.len();
        if fits && self.send_view(&view) {
            if let Some(v) = variant {
                self.cache_sent(&d.message, v, start);
            }
            self.stats_mut().count_publish_out(d.qos);
            if dup {
                self.stats_mut().publish_resent += 1;
            }
            return Ok(());
        }
        if new_alias {
            // The client never saw this mapping.
            if let Some(r) = self.rare.as_mut() {
                r.aliases_out.remove(&d.message.topic);
            }
            self.trim_rare();
        }
        Err(if fits {
            Dropped::Unencodable
        } else {
            Dropped::TooLarge
        })
    }

    /// Fills the window: first in-flight messages not yet sent on this connection (resume),
    /// then the pending queue. Called after CONNACK and whenever the window frees.
    pub(super) fn pump(&mut self, now: Instant) {
        if self.state != State::Connected {
            return;
        }
        if self.resend_pending {
            self.resend_inflight(now);
        }
        while !self.resend_pending && self.inflight_sent < self.window() && !self.output_full() {
            let Some(d) = self.session.as_mut().and_then(|s| s.pop_pending(now)) else {
                return;
            };
            let result = if d.qos == QoS::AtMostOnce {
                self.send_publish(now, &d, 0, false).map(|()| Sent::Now)
            } else {
                self.send_new(now, d, true)
            };
            match result {
                Ok(Sent::Now) => {}
                // Back at the front; its identifier frees with an acknowledgement, which
                // pumps again.
                Ok(Sent::Waiting) => return,
                Err(reason) => self.stats_mut().dropped.count(reason),
            }
        }
    }

    /// Resends in-flight messages of a resumed session in their original order
    /// [MQTT-4.6.0-1]: PUBLISH with DUP=1 [MQTT-3.3.1-1], or PUBREL [MQTT-4.4.0-1].
    fn resend_inflight(&mut self, now: Instant) {
        let Some(ids) = self.session.as_ref().map(|s| s.unsent_ids()) else {
            return;
        };
        for id in ids {
            if self.inflight_sent >= self.window() || self.output_full() {
                return;
            }
            let Some(f) = self.session.as_ref().and_then(|s| s.outgoing.get(id)) else {
                continue;
            };
            let (state, dup, delivery) = (f.state, f.ever_sent, f.delivery.clone());
            if state == OutState::Qos2Released {
                self.send(&Packet::PubRel(PubResponse::new(id)));
            } else if let Err(reason) = self.send_publish(now, &delivery, id, dup) {
                // Too large for this connection's client: discard as if delivered
                // [MQTT-3.1.2-25].
                self.stats_mut().dropped.count(reason);
                if let Some(s) = self.session.as_mut() {
                    s.remove_outgoing(id);
                }
                continue;
            }
            self.mark_sent(id);
        }
        self.resend_pending = false;
    }

    /// Removes an acknowledged in-flight message and refills the window.
    fn finish_outgoing(&mut self, now: Instant, id: u16) {
        if let Some(f) = self.session.as_mut().and_then(|s| s.remove_outgoing(id))
            && f.sent_here
        {
            self.inflight_sent -= 1;
        }
        self.pump(now);
    }

    /// The state of an outgoing id sent on this connection, if any.
    fn sent_state(&self, id: u16) -> Option<OutState> {
        self.session
            .as_ref()
            .and_then(|s| s.outgoing.get(id))
            .filter(|f| f.sent_here)
            .map(|f| f.state)
    }

    /// PUBACK: completes a QoS 1 delivery (whatever its reason code).
    pub(super) fn handle_puback(&mut self, now: Instant, r: PubResponse) {
        if self.sent_state(r.packet_id) == Some(OutState::Qos1Published) {
            self.finish_outgoing(now, r.packet_id);
        } else {
            self.stats_mut().unknown_acks += 1;
        }
    }

    /// PUBREC: a success moves to PUBREL; a failure code (>= 0x80) ends the delivery (5.0).
    pub(super) fn handle_pubrec(&mut self, now: Instant, r: PubResponse) {
        match self.sent_state(r.packet_id) {
            Some(OutState::Qos2Published) if !r.reason_code.is_success() => {
                self.finish_outgoing(now, r.packet_id);
            }
            Some(OutState::Qos2Published | OutState::Qos2Released) => {
                if let Some(s) = self.session.as_mut() {
                    s.release_outgoing(r.packet_id);
                }
                self.send(&Packet::PubRel(PubResponse::new(r.packet_id)));
            }
            _ => {
                self.stats_mut().unknown_acks += 1;
                if self.is_v5() {
                    self.send(&Packet::PubRel(PubResponse {
                        reason_code: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                        ..PubResponse::new(r.packet_id)
                    }));
                }
            }
        }
    }

    /// PUBCOMP: completes a QoS 2 delivery.
    pub(super) fn handle_pubcomp(&mut self, now: Instant, r: PubResponse) {
        if self.sent_state(r.packet_id) == Some(OutState::Qos2Released) {
            self.finish_outgoing(now, r.packet_id);
        } else {
            self.stats_mut().unknown_acks += 1;
        }
    }
}

/// The empty Topic Name of a PUBLISH that uses a Topic Alias (5.0).
static NO_TOPIC: MqttString = MqttString::from_static("");

/// The PUBLISH for delivery `d`, borrowing the message's topic and payload (no new references
/// to its buffers: a delivery's encode costs no atomic operations on them).
fn publish_view<'a>(
    d: &'a Delivery,
    properties: &'a PublishProperties,
    packet_id: u16,
    dup: bool,
    with_topic: bool,
) -> PublishView<'a> {
    let m = &d.message;
    PublishView {
        dup: dup && d.qos != QoS::AtMostOnce,
        qos: d.qos,
        retain: d.retain,
        topic: if with_topic { &m.topic } else { &NO_TOPIC },
        packet_id: if d.qos == QoS::AtMostOnce {
            0
        } else {
            packet_id
        },
        payload: &m.payload,
        properties,
    }
}
