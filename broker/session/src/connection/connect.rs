//! CONNECT validation and the server's answer (CONNACK).

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Instant;

use halyard_codec::{
    ConnAck, ConnAckProperties, Connect, DecodeError, MqttString, PacketType, ProtocolVersion, QoS,
    ReasonCode, encode_connack,
};

use super::{Connection, PeerLimits, PendingConnect, State};
use crate::error::{CloseReason, ProtocolError};
use crate::event::{ConnectRequest, Event};
use crate::message::{MessageProperties, Will};
use crate::session::{SESSION_NEVER_EXPIRES, Session};

impl Connection {
    /// A CONNECT that failed to decode. An unsupported protocol level is answered with the
    /// 3.1.1 CONNACK return code 0x01 [MQTT-3.1.2-2]; a 5.0 CONNECT (`connect_version`, peeked
    /// before decoding) with another error gets
    /// CONNACK with the error's reason code; anything else is closed without a packet.
    pub(super) fn connect_decode_error(
        &mut self,
        err: DecodeError,
        connect_version: Option<ProtocolVersion>,
    ) {
        self.stats_mut().protocol_errors += 1;
        let code = err.reason_code();
        if matches!(err, DecodeError::UnsupportedProtocolVersion(_)) {
            self.version = ProtocolVersion::V311;
            self.send_connack(code, false, ConnAckProperties::default());
        } else if connect_version == Some(ProtocolVersion::V5) {
            self.version = ProtocolVersion::V5;
            self.send_connack(code, false, ConnAckProperties::default());
        }
        self.close(CloseReason::Protocol(ProtocolError::Decode(err)), false);
    }

    /// Sends a CONNACK if the code exists in this version (3.1.1 return codes 0..=5).
    fn send_connack(&mut self, code: ReasonCode, session_present: bool, props: ConnAckProperties) {
        if self.version == ProtocolVersion::V311 && code.v311_connack_return_code().is_none() {
            return;
        }
        let code = if self.is_v5() && !code.allowed_in(PacketType::ConnAck) {
            // e.g. 0x8B/0x8E from `disconnect` before the CONNECT was answered.
            ReasonCode::UNSPECIFIED_ERROR
        } else {
            code
        };
        let ack = ConnAck {
            session_present,
            reason_code: code,
            properties: props,
        };
        self.send_with(|version, tx| encode_connack(&ack, version, tx));
    }

    /// Refuses the CONNECT with `code` (CONNACK, when the version has such a code) and
    /// closes without a will.
    fn refuse_connect(&mut self, code: ReasonCode) {
        self.send_connack(code, false, ConnAckProperties::default());
        self.pending_connect = None;
        self.close(CloseReason::ConnectRefused(code), false);
    }

    /// Validates a CONNECT and emits [`Event::Connect`], or refuses it.
    pub(super) fn handle_connect(&mut self, _now: Instant, c: Connect) {
        self.version = c.protocol_version;
        let v5 = self.is_v5();
        let props = c.properties;
        if v5 && props.authentication_method.is_some() {
            // No enhanced authentication method is supported (MQTT 5.0 §4.12).
            return self.refuse_connect(ReasonCode::BAD_AUTHENTICATION_METHOD);
        }
        let mut client_id_assigned = false;
        let client_id: Arc<str> = if c.client_id.is_empty() {
            if !v5 && !c.clean_start {
                // [MQTT-3.1.3-8]: 3.1.1 empty identifier with Clean Session 0.
                return self.refuse_connect(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            }
            // 5.0 [MQTT-3.1.3-6] (announced, [MQTT-3.2.2-16]); 3.1.1 [MQTT-3.1.3-6] (internal).
            client_id_assigned = v5;
            self.generate_client_id().into()
        } else {
            c.client_id.as_str().into()
        };
        if client_id.len() > self.cfg.max_client_id_len {
            return self.refuse_connect(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        }
        let mut keep_alive = c.keep_alive;
        let mut server_keep_alive = None;
        if keep_alive > self.cfg.max_keepalive || (keep_alive == 0 && self.cfg.require_keepalive) {
            if !v5 {
                // 3.1.1 cannot announce Server Keep Alive: refuse as Mosquitto does.
                return self.refuse_connect(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            }
            keep_alive = self.cfg.max_keepalive;
            server_keep_alive = Some(keep_alive);
        }
        let will = match c.will {
            None => None,
            Some(w) => match self.validate_will(w) {
                Ok(w) => Some(w),
                Err(code) => return self.refuse_connect(code),
            },
        };
        let requested_expiry = if v5 {
            props.session_expiry_interval.unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            SESSION_NEVER_EXPIRES
        };
        let session_expiry_interval = requested_expiry.min(self.cfg.max_session_expiry);
        self.peer = if v5 {
            PeerLimits {
                receive_maximum: props.receive_maximum.unwrap_or(u16::MAX).max(1),
                max_packet_size: props
                    .maximum_packet_size
                    .unwrap_or(halyard_codec::MAX_PACKET_SIZE),
                topic_alias_maximum: props.topic_alias_maximum.unwrap_or(0),
            }
        } else {
            PeerLimits::default()
        };
        self.keep_alive = keep_alive;
        self.connect_expiry_interval = session_expiry_interval;
        self.state = State::AwaitDecision;
        self.pending_connect = Some(Box::new(PendingConnect {
            client_id: client_id.clone(),
            client_id_assigned,
            clean_start: c.clean_start,
            session_expiry_interval,
            session_expiry_capped: session_expiry_interval != requested_expiry,
            will: will.clone(),
            server_keep_alive,
        }));
        self.events
            .push_back(Event::Connect(Box::new(ConnectRequest {
                protocol_version: self.version,
                client_id,
                client_id_assigned,
                clean_start: c.clean_start,
                session_expiry_interval,
                username: c.username,
                password: c.password,
                will,
                keep_alive,
                receive_maximum: self.peer.receive_maximum,
                maximum_packet_size: props.maximum_packet_size,
                topic_alias_maximum: self.peer.topic_alias_maximum,
                request_problem_information: props.request_problem_information.unwrap_or(true),
                request_response_information: props.request_response_information.unwrap_or(false),
                user_properties: props.user_properties,
            })));
    }

    /// Checks the will against our limits; the error is the CONNACK reason code.
    fn validate_will(&mut self, w: halyard_codec::Will) -> Result<Will, ReasonCode> {
        if let Err(e) = self.cfg.topic_limits.validate_topic_name(&w.topic) {
            super::inbound::count_topic_limit(self.stats_mut(), &e);
            return Err(ReasonCode::TOPIC_NAME_INVALID);
        }
        if w.qos > self.cfg.maximum_qos {
            // [MQTT-3.2.2-12]
            return Err(ReasonCode::QOS_NOT_SUPPORTED);
        }
        if w.retain && !self.cfg.retain_available {
            // [MQTT-3.2.2-13]
            return Err(ReasonCode::RETAIN_NOT_SUPPORTED);
        }
        let p = w.properties;
        Ok(Will {
            topic: w.topic,
            payload: w.payload,
            qos: w.qos,
            retain: w.retain,
            properties: MessageProperties {
                payload_format_indicator: p.payload_format_indicator,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
            },
            message_expiry_interval: p.message_expiry_interval,
            delay_interval: p.will_delay_interval.unwrap_or(0),
        })
    }

    /// A fresh client identifier: the configured prefix and 128 random bits (from std's
    /// per-process random hash keys; no clock, no global of ours).
    fn generate_client_id(&self) -> String {
        let a = RandomState::new().hash_one(self.stats().bytes_in);
        let b = RandomState::new().hash_one(self.connect_deadline);
        format!("{}{a:016x}{b:016x}", self.cfg.assigned_client_id_prefix)
    }

    /// Accepts the CONNECT announced by [`Event::Connect`]: sends CONNACK 0x00 and starts
    /// the session.
    ///
    /// `session`: the client's existing session to resume (Clean Start 0 and one exists), or
    /// `None` for a new one (always `None` when the request had Clean Start 1
    /// [MQTT-3.1.2-4]). `session_present` is the CONNACK flag; it is forced to false with
    /// Clean Start 1 [MQTT-3.2.2-2] (3.1.1 [MQTT-3.2.2-1]).
    ///
    /// On resume, in-flight messages are resent first, in their original order, PUBLISH with
    /// DUP=1 and PUBREL for those past PUBREC [MQTT-4.4.0-1] (3.1.1 [MQTT-4.4.0-1]), within
    /// the window; then queued messages. Bytes the client sent after CONNECT are processed
    /// now. Ignored unless an [`Event::Connect`] is awaiting an answer.
    pub fn accept_connect(
        &mut self,
        now: Instant,
        session: Option<Session>,
        session_present: bool,
    ) {
        if self.state != State::AwaitDecision {
            return;
        }
        let Some(p) = self.pending_connect.take() else {
            return;
        };
        let session = match session {
            Some(mut s) => {
                s.set_expiry_interval(p.session_expiry_interval);
                s.apply_config(&self.cfg);
                s.reset_sent_here();
                s
            }
            None => Session::new(p.client_id.clone(), p.session_expiry_interval, &self.cfg),
        };
        let session_present = session_present && !p.clean_start;
        let props = if self.is_v5() {
            self.connack_properties(&p)
        } else {
            ConnAckProperties::default()
        };
        self.send_connack(ReasonCode::SUCCESS, session_present, props);
        self.state = State::Connected;
        self.will = p.will.map(Box::new);
        self.last_packet = now;
        self.resend_pending = session.inflight_len() > 0;
        self.session = Some(session);
        self.pump(now);
        // Bytes buffered while the server decided were not being read: their partial-packet
        // clock starts now.
        self.partial_since = None;
        self.process_input(now);
    }

    /// The 5.0 CONNACK properties announcing our limits (only those that differ from the
    /// protocol defaults).
    fn connack_properties(&self, p: &PendingConnect) -> ConnAckProperties {
        let cfg = &self.cfg;
        ConnAckProperties {
            receive_maximum: (cfg.receive_maximum != u16::MAX)
                .then(|| cfg.effective_receive_maximum()),
            maximum_qos: (cfg.maximum_qos != QoS::ExactlyOnce).then_some(cfg.maximum_qos),
            retain_available: (!cfg.retain_available).then_some(false),
            maximum_packet_size: (cfg.max_packet_size < halyard_codec::MAX_PACKET_SIZE)
                .then_some(cfg.max_packet_size.max(1)),
            assigned_client_identifier: p
                .client_id_assigned
                .then(|| MqttString::from(&*p.client_id)),
            topic_alias_maximum: (cfg.topic_alias_maximum > 0).then_some(cfg.topic_alias_maximum),
            wildcard_subscription_available: (!cfg.wildcard_subscription_available)
                .then_some(false),
            subscription_identifiers_available: (!cfg.subscription_identifiers_available)
                .then_some(false),
            shared_subscription_available: (!cfg.shared_subscription_available).then_some(false),
            server_keep_alive: p.server_keep_alive,
            session_expiry_interval: p.session_expiry_capped.then_some(p.session_expiry_interval),
            ..ConnAckProperties::default()
        }
    }

    /// Refuses the CONNECT announced by [`Event::Connect`] with a 5.0 reason code >= 0x80
    /// (e.g. 0x86 bad user name or password, 0x87 not authorized, 0x8A banned); a code
    /// below 0x80 is sent as 0x80. 3.1.1 gets the mapped return code
    /// ([`ReasonCode::v311_connack_return_code`]), or no CONNACK when there is none. Then
    /// the connection closes ([`Event::Closed`] with [`CloseReason::ConnectRefused`], no
    /// will). Ignored unless an [`Event::Connect`] is awaiting an answer.
    pub fn reject_connect(&mut self, reason: ReasonCode) {
        if self.state != State::AwaitDecision {
            return;
        }
        let code = if reason.is_success() {
            ReasonCode::UNSPECIFIED_ERROR
        } else {
            reason
        };
        self.refuse_connect(code);
    }
}
