//! Packets from the client after CONNECT: PUBLISH and its acknowledgements, SUBSCRIBE,
//! UNSUBSCRIBE, DISCONNECT; and the server's answers to them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use halyard_codec::{
    Disconnect, MqttString, Packet, PacketType, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe,
};

use super::{Connection, Incoming, PendingSubscribe, State, allowed_or_unspecified};
use crate::error::{CloseReason, ProtocolError};
use crate::event::{Event, SubscribeRequest};
use crate::message::{Message, MessageProperties};
use crate::session::Subscription;

impl Connection {
    /// Resolves the topic of an incoming PUBLISH (alias handling, validation).
    fn publish_topic(&mut self, p: &Publish) -> Result<MqttString, ProtocolError> {
        let alias = if self.is_v5() {
            p.properties.topic_alias
        } else {
            None
        };
        let topic = match alias {
            Some(a) if a == 0 || a > self.cfg.topic_alias_maximum => {
                return Err(ProtocolError::TopicAliasInvalid(a));
            }
            Some(a) if p.topic.is_empty() => self
                .rare
                .as_ref()
                .and_then(|r| r.aliases_in.get(&a))
                .cloned()
                .ok_or(ProtocolError::TopicAliasUnknown(Some(a)))?,
            None if p.topic.is_empty() && self.is_v5() => {
                return Err(ProtocolError::TopicAliasUnknown(None));
            }
            _ => p.topic.clone(),
        };
        if let Err(e) = self.cfg.topic_limits.validate_topic_name(&topic) {
            count_topic_limit(self.stats_mut(), &e);
            return Err(ProtocolError::TopicNameInvalid(e));
        }
        if let Some(a) = alias
            && !p.topic.is_empty()
        {
            // Bounded: at most `topic_alias_maximum` entries.
            self.rare_mut().aliases_in.insert(a, topic.clone());
        }
        Ok(topic)
    }

    /// Incoming PUBLISH: validate, filter QoS 2 duplicates, enforce Receive Maximum, emit.
    pub(super) fn handle_publish(&mut self, now: Instant, p: Publish) {
        self.stats_mut().count_publish_in(p.qos);
        if p.qos > self.cfg.maximum_qos {
            return self.protocol_error(ProtocolError::QosNotSupported(p.qos));
        }
        if p.retain && !self.cfg.retain_available {
            return self.protocol_error(ProtocolError::RetainNotSupported);
        }
        if !p.properties.subscription_identifiers.is_empty() {
            return self.protocol_error(ProtocolError::SubscriptionIdInPublish);
        }
        let topic = match self.publish_topic(&p) {
            Ok(t) => t,
            Err(e) => return self.protocol_error(e),
        };
        let packet_id = (p.qos != QoS::AtMostOnce).then_some(p.packet_id);
        if let Some(id) = packet_id {
            let Some(session) = self.session.as_ref() else {
                return;
            };
            if p.qos == QoS::ExactlyOnce && session.incoming_qos2.contains(&id) {
                // Already acknowledged with PUBREC: not emitted again; PUBREC again
                // (MQTT 5.0 §4.3.3, method B).
                self.stats_mut().qos2_duplicates += 1;
                self.send(&Packet::PubRec(PubResponse::new(id)));
                return;
            }
            if self.incoming.iter().any(|i| i.packet_id == id) {
                // Still awaiting the server's answer: its acknowledgement will follow.
                if p.qos == QoS::ExactlyOnce {
                    self.stats_mut().qos2_duplicates += 1;
                }
                return;
            }
            let unacked = self.incoming.len() + session.incoming_qos2.len();
            if unacked >= usize::from(self.cfg.effective_receive_maximum()) {
                return self.protocol_error(ProtocolError::ReceiveMaximumExceeded);
            }
        }
        let props = p.properties;
        if props.payload_format_indicator == Some(true) && std::str::from_utf8(&p.payload).is_err()
        {
            // The payload is not the UTF-8 it claims (MQTT 5.0 §3.3.2.3.2): not forwarded;
            // QoS 1/2 get 0x99 in their acknowledgement, in order.
            if let Some(id) = packet_id {
                self.incoming.push_back(Incoming {
                    packet_id: id,
                    qos: p.qos,
                    result: Some(ReasonCode::PAYLOAD_FORMAT_INVALID),
                });
                self.flush_incoming_acks();
            }
            return;
        }
        if let Some(id) = packet_id {
            self.incoming.push_back(Incoming {
                packet_id: id,
                qos: p.qos,
                result: None,
            });
        }
        let message = Message {
            topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: MessageProperties {
                payload_format_indicator: props.payload_format_indicator,
                content_type: props.content_type,
                response_topic: props.response_topic,
                correlation_data: props.correlation_data,
                user_properties: props.user_properties,
            },
            expires_at: props
                .message_expiry_interval
                .map(|s| now + Duration::from_secs(u64::from(s))),
            publisher: self.session.as_ref().map(|s| s.client_id().clone()),
        };
        self.events.push_back(Event::Publish {
            packet_id,
            message: Arc::new(message),
        });
    }

    /// The server's answer to an [`Event::Publish`] with `packet_id: Some(id)`: `reason` is
    /// 0x00 (success), 0x10 (no matching subscribers) or a failure (0x80, 0x83, 0x87, 0x90,
    /// 0x97, ...). Sends PUBACK (QoS 1) or PUBREC (QoS 2); acknowledgements leave in the
    /// order the PUBLISH packets arrived, so an answer may wait for earlier ones
    /// [MQTT-4.6.0-2] [MQTT-4.6.0-3]. 3.1.1 acknowledgements carry no code. A successful
    /// QoS 2 answer records the id as awaiting PUBREL (duplicates are then filtered), even
    /// after close, so call this before [`Connection::into_session`]. Unknown ids are
    /// ignored.
    pub fn complete_publish(&mut self, _now: Instant, packet_id: u16, reason: ReasonCode) {
        if let Some(i) = self
            .incoming
            .iter_mut()
            .find(|i| i.packet_id == packet_id && i.result.is_none())
        {
            i.result = Some(reason);
        }
        self.flush_incoming_acks();
    }

    /// Sends the acknowledgements at the front of the incoming queue that have an answer.
    fn flush_incoming_acks(&mut self) {
        while let Some(i) = self.incoming.front().copied() {
            let Some(reason) = i.result else {
                return;
            };
            self.incoming.pop_front();
            let kind = match i.qos {
                QoS::ExactlyOnce => PacketType::PubRec,
                _ => PacketType::PubAck,
            };
            let reason = allowed_or_unspecified(reason, kind);
            let ack = PubResponse {
                reason_code: reason,
                ..PubResponse::new(i.packet_id)
            };
            let awaits_pubrel = i.qos == QoS::ExactlyOnce
                && (reason.is_success() || self.version == ProtocolVersion::V311);
            if awaits_pubrel && let Some(s) = self.session.as_mut() {
                s.insert_incoming_qos2(i.packet_id);
            }
            if self.state == State::Connected {
                let packet = match i.qos {
                    QoS::ExactlyOnce => Packet::PubRec(ack),
                    _ => Packet::PubAck(ack),
                };
                self.send(&packet);
            }
        }
    }

    /// PUBREL: release a QoS 2 id and answer PUBCOMP (0x92 if unknown, 5.0).
    pub(super) fn handle_pubrel(&mut self, r: PubResponse) {
        let known = self
            .session
            .as_mut()
            .is_some_and(|s| s.remove_incoming_qos2(r.packet_id));
        let code = if known {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.send(&Packet::PubComp(PubResponse {
            reason_code: code,
            ..PubResponse::new(r.packet_id)
        }));
    }

    /// SUBSCRIBE: validate each filter and emit [`Event::Subscribe`].
    pub(super) fn handle_subscribe(&mut self, s: Subscribe) {
        if self.pending_requests() >= self.cfg.max_pending_requests {
            return self.protocol_error(ProtocolError::TooManyPendingRequests);
        }
        if self
            .pending_subscribes
            .iter()
            .any(|p| p.packet_id == s.packet_id)
        {
            return self.protocol_error(ProtocolError::PacketIdInUse(s.packet_id));
        }
        let subscription_id = s.properties.subscription_identifier;
        if subscription_id.is_some() && !self.cfg.subscription_identifiers_available {
            return self.protocol_error(ProtocolError::SubscriptionIdsNotSupported);
        }
        let Some(session) = self.session.as_ref() else {
            return;
        };
        // New filters still awaiting the server's answer count too: a client pipelining
        // SUBSCRIBEs must not get past `max_subscriptions` before the first SUBACK (a pending
        // filter the server then refuses was counted for nothing; the bound holds either way).
        let pending_new: usize = self
            .pending_subscribes
            .iter()
            .map(|p| p.new_filters as usize)
            .sum();
        let mut total = session.subscriptions().len() + pending_new;
        let mut new_filters = 0u32;
        let mut requests = Vec::with_capacity(s.filters.len());
        for f in s.filters {
            let mut options = f.options;
            options.qos = options.qos.min(self.cfg.maximum_qos);
            let limits = self.cfg.topic_limits;
            let (share_group, mut status) = match limits.parse_shared_subscription(&f.filter) {
                Err(e) => {
                    count_topic_limit(self.stats.get_or_insert_with(Box::default), &e);
                    (None, Err(ReasonCode::TOPIC_FILTER_INVALID))
                }
                Ok(Some(sf)) => {
                    if options.no_local && self.is_v5() {
                        return self.protocol_error(ProtocolError::NoLocalOnSharedSubscription);
                    }
                    let status = if self.cfg.shared_subscription_available {
                        // The inner filter passed `parse_shared_subscription`'s check, so
                        // this one cannot fail (mapped to 0x8F all the same).
                        limits
                            .check_topic_filter(MqttString::from(sf.filter))
                            .map_err(|_| ReasonCode::TOPIC_FILTER_INVALID)
                    } else {
                        Err(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
                    };
                    (Some(MqttString::from(sf.group)), status)
                }
                Ok(None) => {
                    let status = limits.check_topic_filter(f.filter.clone()).map_err(|e| {
                        count_topic_limit(self.stats.get_or_insert_with(Box::default), &e);
                        ReasonCode::TOPIC_FILTER_INVALID
                    });
                    (None, status)
                }
            };
            if status.as_ref().is_ok_and(|t| {
                !self.cfg.wildcard_subscription_available
                    && t.as_str().bytes().any(|b| b == b'+' || b == b'#')
            }) {
                status = Err(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED);
            }
            let is_new = !session.subscriptions().contains_key(f.filter.as_str());
            if status.is_ok() && is_new {
                if total >= self.cfg.max_subscriptions {
                    self.stats
                        .get_or_insert_with(Box::default)
                        .subscription_limit_hits += 1;
                    status = Err(ReasonCode::QUOTA_EXCEEDED);
                } else {
                    total += 1;
                    new_filters += 1;
                }
            }
            requests.push(SubscribeRequest {
                filter: f.filter,
                share_group,
                options,
                subscription_id,
                is_new,
                status,
            });
        }
        self.pending_subscribes.push(PendingSubscribe {
            packet_id: s.packet_id,
            new_filters,
        });
        self.events.push_back(Event::Subscribe {
            packet_id: s.packet_id,
            requests,
        });
    }

    /// The server's answer to an [`Event::Subscribe`]: `requests` is the event's list, handed
    /// back as it came (the session keeps no copy meanwhile), and `granted` one code per
    /// request, in order (0x00/0x01/0x02 = granted QoS, or a failure >= 0x80 such as 0x87
    /// not authorized). Requests the session refused keep their own code whatever `granted`
    /// says; a missing entry counts as 0x80. Granted subscriptions are recorded in the
    /// session (replacing any with the same filter [MQTT-3.8.4-3]); then the SUBACK is sent
    /// (3.1.1: failures as 0x80). Unknown packet ids are ignored.
    pub fn complete_subscribe(
        &mut self,
        _now: Instant,
        packet_id: u16,
        requests: Vec<SubscribeRequest>,
        granted: Vec<ReasonCode>,
    ) {
        let Some(i) = self
            .pending_subscribes
            .iter()
            .position(|p| p.packet_id == packet_id)
        else {
            return;
        };
        self.pending_subscribes.swap_remove(i);
        // The SUBACK's codes are written over `granted` (one per request; a missing entry
        // counts as 0x80): no second vector per SUBSCRIBE.
        let mut codes = granted;
        codes.resize(requests.len(), ReasonCode::UNSPECIFIED_ERROR);
        for (r, code) in requests.into_iter().zip(codes.iter_mut()) {
            *code = match r.status {
                Err(refused) => refused,
                Ok(_) if code.0 <= 2 => *code,
                Ok(_) => allowed_or_unspecified(*code, PacketType::SubAck),
            };
            let code = *code;
            if let Some(qos) = QoS::from_u8(code.0)
                && let Some(s) = self.session.as_mut()
            {
                let mut options = r.options;
                options.qos = qos;
                s.subscriptions_mut().insert(
                    r.filter.as_str().to_owned(),
                    Subscription {
                        options,
                        subscription_id: r.subscription_id,
                    },
                );
            }
        }
        self.send(&Packet::SubAck(SubAck {
            packet_id,
            reason_codes: codes,
            properties: Default::default(),
        }));
    }

    /// UNSUBSCRIBE: emit [`Event::Unsubscribe`].
    pub(super) fn handle_unsubscribe(&mut self, u: Unsubscribe) {
        if self.pending_requests() >= self.cfg.max_pending_requests {
            return self.protocol_error(ProtocolError::TooManyPendingRequests);
        }
        if self
            .rare
            .as_ref()
            .is_some_and(|r| r.pending_unsubscribes.contains_key(&u.packet_id))
        {
            return self.protocol_error(ProtocolError::PacketIdInUse(u.packet_id));
        }
        self.rare_mut()
            .pending_unsubscribes
            .insert(u.packet_id, u.filters.clone());
        self.events.push_back(Event::Unsubscribe {
            packet_id: u.packet_id,
            filters: u.filters,
        });
    }

    /// The server's answer to an [`Event::Unsubscribe`]: one code per filter (0x00 success,
    /// 0x11 no subscription existed, or a failure). A missing entry becomes 0x00 when the
    /// session held the filter, else 0x11. Filters answered 0x00 are removed from the
    /// session; then UNSUBACK is sent (3.1.1: without codes). Unknown packet ids are
    /// ignored.
    pub fn complete_unsubscribe(&mut self, _now: Instant, packet_id: u16, codes: Vec<ReasonCode>) {
        let Some(filters) = self
            .rare
            .as_mut()
            .and_then(|r| r.pending_unsubscribes.remove(&packet_id))
        else {
            return;
        };
        self.trim_rare();
        let mut out = Vec::with_capacity(filters.len());
        for (i, f) in filters.iter().enumerate() {
            let existed = self
                .session
                .as_ref()
                .is_some_and(|s| s.subscriptions().contains_key(f.as_str()));
            let code = codes.get(i).copied().map_or(
                if existed {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                },
                |c| allowed_or_unspecified(c, PacketType::UnsubAck),
            );
            if code == ReasonCode::SUCCESS
                && let Some(s) = self.session.as_mut()
            {
                s.subscriptions_mut().remove(f.as_str());
            }
            out.push(code);
        }
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id,
            reason_codes: out,
            properties: Default::default(),
        }));
    }

    /// DISCONNECT from the client: apply a 5.0 Session Expiry Interval change, then close.
    /// The will is kept back only for reason 0x00 [MQTT-3.14.4-3]; 0x04 and every other
    /// code return it.
    pub(super) fn handle_disconnect(&mut self, d: Disconnect) {
        if let Some(expiry) = d.properties.session_expiry_interval {
            if self.connect_expiry_interval == 0 && expiry != 0 {
                return self.protocol_error(ProtocolError::SessionExpiryFromZero);
            }
            let expiry = expiry.min(self.cfg.max_session_expiry);
            if let Some(s) = self.session.as_mut() {
                s.set_expiry_interval(expiry);
            }
        }
        let send_will = d.reason_code != ReasonCode::NORMAL_DISCONNECTION;
        self.close(CloseReason::ClientDisconnect(d.reason_code), send_will);
    }
}

/// Counts a topic name or filter refused by a configured limit (length or levels); other
/// topic errors are protocol errors, counted elsewhere.
pub(super) fn count_topic_limit(
    stats: &mut crate::ConnectionStats,
    e: &halyard_topics::TopicError,
) {
    match e {
        halyard_topics::TopicError::TooLong { .. } => stats.topic_length_limit_hits += 1,
        halyard_topics::TopicError::TooManyLevels { .. } => stats.topic_levels_limit_hits += 1,
        _ => {}
    }
}
