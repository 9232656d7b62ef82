//! The fifteen MQTT control packets.

use bytes::Bytes;

use crate::props::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use crate::reason::ReasonCode;
use crate::types::{MqttString, PacketType, ProtocolVersion, QoS, SubscriptionOptions};

/// CONNECT. Encoded with its own `protocol_version` whatever version the caller passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version requested by the client (level 4 or 5).
    pub protocol_version: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep Alive in seconds (0 = disabled).
    pub keep_alive: u16,
    /// Client Identifier (may be empty).
    pub client_id: MqttString,
    /// Will message, if the Will Flag is set.
    pub will: Option<Will>,
    /// User Name.
    pub username: Option<MqttString>,
    /// Password (3.1.1 requires a user name with it [MQTT-3.1.2-22]).
    pub password: Option<Bytes>,
    /// CONNECT properties (5.0 only).
    pub properties: ConnectProperties,
}

/// The Will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Will Topic.
    pub topic: MqttString,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// Will properties (5.0 only).
    pub properties: WillProperties,
}

/// CONNACK. For 3.1.1 `reason_code` is mapped to a return code with
/// [`ReasonCode::v311_connack_return_code`] (and back when decoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// Connect Reason Code.
    pub reason_code: ReasonCode,
    /// CONNACK properties (5.0 only).
    pub properties: ConnAckProperties,
}

/// PUBLISH. The payload shares the received buffer (zero-copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag. Must be false for QoS 0 [MQTT-3.3.1-2]: the encoder does not write it then.
    pub dup: bool,
    /// QoS level.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic Name, not validated for wildcards here (see halyard-topics); may be empty in 5.0
    /// when a Topic Alias is used.
    pub topic: MqttString,
    /// Packet Identifier: non-zero for QoS 1 and 2; 0 (and not encoded) for QoS 0.
    pub packet_id: u16,
    /// Application payload.
    pub payload: Bytes,
    /// PUBLISH properties (5.0 only).
    pub properties: PublishProperties,
}

impl Publish {
    /// This PUBLISH with its fields borrowed (what [`crate::encode`] writes it through).
    pub fn as_view(&self) -> PublishView<'_> {
        PublishView {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            packet_id: self.packet_id,
            payload: &self.payload,
            properties: &self.properties,
        }
    }
}

/// A PUBLISH whose topic, payload and properties are borrowed: the broker encodes each
/// delivery of a stored message through it (`crate::encode_publish`) without taking new
/// references to the message's buffers. Same fields and rules as [`Publish`], which encodes
/// through this view (one encoder for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishView<'a> {
    /// DUP flag (not written for QoS 0).
    pub dup: bool,
    /// QoS level.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic Name (may be empty in 5.0 when a Topic Alias is used).
    pub topic: &'a MqttString,
    /// Packet Identifier: non-zero for QoS 1 and 2; not encoded for QoS 0.
    pub packet_id: u16,
    /// Application payload.
    pub payload: &'a [u8],
    /// PUBLISH properties (5.0 only).
    pub properties: &'a PublishProperties,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP. In 3.1.1 only `packet_id` is on the wire: the reason
/// code and properties are not encoded and decode as `SUCCESS` and empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    /// Packet Identifier (non-zero).
    pub packet_id: u16,
    /// Reason code (5.0); omitted on the wire when `SUCCESS` without properties.
    pub reason_code: ReasonCode,
    /// Properties (5.0).
    pub properties: AckProperties,
}

impl PubResponse {
    /// A successful response without properties.
    pub fn new(packet_id: u16) -> Self {
        PubResponse {
            packet_id,
            reason_code: ReasonCode::SUCCESS,
            properties: AckProperties::default(),
        }
    }
}

/// PUBACK (QoS 1 acknowledgement).
pub type PubAck = PubResponse;
/// PUBREC (QoS 2, part 1).
pub type PubRec = PubResponse;
/// PUBREL (QoS 2, part 2).
pub type PubRel = PubResponse;
/// PUBCOMP (QoS 2, part 3).
pub type PubComp = PubResponse;

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Topic Filter (not validated for wildcard placement here; see halyard-topics).
    pub filter: MqttString,
    /// Subscription options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier (non-zero).
    pub packet_id: u16,
    /// At least one filter [MQTT-3.8.3-3].
    pub filters: Vec<SubscribeFilter>,
    /// SUBSCRIBE properties (5.0 only).
    pub properties: SubscribeProperties,
}

/// SUBACK. 3.1.1 return codes are 0x00/0x01/0x02 or 0x80 (every 5.0 failure code is encoded
/// as 0x80; see [`ReasonCode::v311_suback_return_code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet Identifier (non-zero).
    pub packet_id: u16,
    /// One reason code per filter of the SUBSCRIBE, in order.
    pub reason_codes: Vec<ReasonCode>,
    /// Properties (5.0 only).
    pub properties: AckProperties,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet Identifier (non-zero).
    pub packet_id: u16,
    /// At least one filter [MQTT-3.10.3-2].
    pub filters: Vec<MqttString>,
    /// Properties (5.0 only).
    pub properties: UnsubscribeProperties,
}

/// UNSUBACK. 3.1.1 carries only the packet identifier: `reason_codes` is not encoded and
/// decodes as empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet Identifier (non-zero).
    pub packet_id: u16,
    /// One reason code per filter (5.0 only).
    pub reason_codes: Vec<ReasonCode>,
    /// Properties (5.0 only).
    pub properties: AckProperties,
}

/// DISCONNECT. 3.1.1 carries nothing: the reason code and properties are not encoded and
/// decode as `SUCCESS` (normal disconnection) and empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Disconnect reason code (5.0).
    pub reason_code: ReasonCode,
    /// Properties (5.0).
    pub properties: DisconnectProperties,
}

/// AUTH (MQTT 5.0 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Authenticate reason code (0x00, 0x18 or 0x19).
    pub reason_code: ReasonCode,
    /// Properties.
    pub properties: AuthProperties,
}

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT.
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(Box<ConnAck>),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(PubAck),
    /// PUBREC.
    PubRec(PubRec),
    /// PUBREL.
    PubRel(PubRel),
    /// PUBCOMP.
    PubComp(PubComp),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (5.0 only).
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}
