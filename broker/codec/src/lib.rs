//! halyard-codec: the one MQTT 3.1.1 + 5.0 codec of the project.
//!
//! It owns the wire format of all fifteen control packets and every MQTT 5.0 property:
//! streaming [`decode`] (partial input returns `Ok(None)`; the maximum packet size is checked
//! from the fixed header before the body is buffered), [`encode`] into caller-owned buffers and
//! [`encoded_len`]. Every protocol violation it detects is a [`DecodeError`] that names the
//! MQTT 5.0 reason code to answer with and the specification statement it breaks.
//!
//! It must never do I/O, read the clock, allocate without bound on behalf of the peer, or
//! panic on input from the network. Topic name/filter rules (wildcards, `$share`) belong to
//! halyard-topics and session rules (topic aliases, receive maximum) to halyard-session.
//!
//! ```
//! use bytes::BytesMut;
//! use halyard_codec::{Packet, ProtocolVersion, PubResponse, decode, encode, encoded_len};
//!
//! let packet = Packet::PubAck(PubResponse::new(7));
//! let mut wire = BytesMut::new();
//! encode(&packet, ProtocolVersion::V5, &mut wire).unwrap();
//! assert_eq!(wire.len(), encoded_len(&packet, ProtocolVersion::V5));
//!
//! // Streaming: a partial packet asks for more and consumes nothing.
//! let mut input = BytesMut::from(&wire[..1]);
//! assert_eq!(decode(&mut input, ProtocolVersion::V5, 1024), Ok(None));
//! input.extend_from_slice(&wire[1..]);
//! assert_eq!(decode(&mut input, ProtocolVersion::V5, 1024), Ok(Some(packet)));
//! ```

mod decode;
mod encode;
mod error;
pub mod fuzzing;
mod packet;
mod props;
mod reason;
mod types;
mod wire;

pub use decode::{FixedHeader, decode, peek_connect_version, peek_header, take_short_ack};
pub use encode::{encode, encode_connack, encode_publish, encoded_len, publish_encoded_len};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubAck, PubComp, PubRec, PubRel, PubResponse,
    Publish, PublishView, SubAck, Subscribe, SubscribeFilter, UnsubAck, Unsubscribe, Will,
};
pub use props::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperties, WillProperties,
    id as property_id,
};
pub use reason::ReasonCode;
pub use types::{
    MqttString, PacketType, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions,
};
pub use wire::MAX_VARIABLE_BYTE_INTEGER;

/// The largest packet MQTT can express: a 5-byte fixed header plus the maximum remaining
/// length. Use as `max_packet_size` for "no limit".
pub const MAX_PACKET_SIZE: u32 = 1 + 4 + MAX_VARIABLE_BYTE_INTEGER;
