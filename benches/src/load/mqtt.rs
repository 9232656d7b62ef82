//! A minimal MQTT client side on top of halyard-codec: connect, subscribe, read packets, and a
//! PUBLISH template patched in place for each message (no per-message encode or allocation).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use halyard_codec::{
    Connect, ConnectProperties, MAX_PACKET_SIZE, Packet, ProtocolVersion, Publish,
    PublishProperties, QoS, Subscribe, SubscribeFilter, SubscribeProperties, SubscriptionOptions,
    decode, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::LoadError;
use crate::payload::{HEADER_LEN, Stamp};

/// Bytes the read buffer grows by when it runs low.
pub const READ_CHUNK: usize = 64 * 1024;

/// How long connecting and subscribing may take per connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Connection parameters shared by every client of a run.
#[derive(Debug, Clone)]
pub struct ClientParams {
    /// Broker address (checked to be loopback).
    pub target: SocketAddr,
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Keep Alive in seconds sent in CONNECT (0 = off; the generator sends no PINGREQ).
    pub keep_alive: u16,
}

/// Session Expiry Interval a persistent subscriber asks for (5.0), seconds: longer than any
/// run, short enough that a broker keeping sessions forgets them after an hour.
pub const PERSISTENT_SESSION_EXPIRY: u32 = 3600;

/// The session a client asks for in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Clean Start 1 (3.1.1: Clean Session 1), no Session Expiry Interval.
    Clean,
    /// Clean Start 0 (3.1.1: Clean Session 0) and, with 5.0, a Session Expiry Interval of
    /// [`PERSISTENT_SESSION_EXPIRY`]: the broker keeps (and, with a store, persists) the
    /// session and its QoS 1 deliveries.
    Persistent,
}

/// Reads packets until one is complete.
pub async fn read_packet(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    v: ProtocolVersion,
) -> Result<Packet, LoadError> {
    loop {
        if let Some(p) = decode(buf, v, MAX_PACKET_SIZE)? {
            return Ok(p);
        }
        buf.reserve(READ_CHUNK);
        if s.read_buf(buf).await? == 0 {
            return Err(LoadError::Closed);
        }
    }
}

async fn handshake(
    p: &ClientParams,
    client_id: &str,
    filter: Option<(&str, QoS)>,
    session: SessionKind,
) -> Result<(TcpStream, BytesMut), LoadError> {
    let mut s = TcpStream::connect(p.target).await?;
    s.set_nodelay(true)?;
    let mut out = BytesMut::with_capacity(256);
    let persistent = session == SessionKind::Persistent;
    let properties = ConnectProperties {
        session_expiry_interval: (persistent && p.version == ProtocolVersion::V5)
            .then_some(PERSISTENT_SESSION_EXPIRY),
        ..ConnectProperties::default()
    };
    let connect = Packet::Connect(Box::new(Connect {
        protocol_version: p.version,
        clean_start: !persistent,
        keep_alive: p.keep_alive,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties,
    }));
    encode(&connect, p.version, &mut out)?;
    s.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    match read_packet(&mut s, &mut buf, p.version).await? {
        Packet::ConnAck(ack) if ack.reason_code.is_success() => {}
        Packet::ConnAck(ack) => {
            return Err(LoadError::Refused(format!(
                "CONNACK {:#04x}",
                ack.reason_code.0
            )));
        }
        other => {
            return Err(LoadError::Unexpected(format!(
                "{:?} instead of CONNACK",
                other.packet_type()
            )));
        }
    }
    if let Some((filter, qos)) = filter {
        out.clear();
        let sub = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: filter.into(),
                options: SubscriptionOptions::qos(qos),
            }],
            properties: SubscribeProperties::default(),
        });
        encode(&sub, p.version, &mut out)?;
        s.write_all(&out).await?;
        match read_packet(&mut s, &mut buf, p.version).await? {
            Packet::SubAck(ack) if ack.reason_codes.first().is_some_and(|c| c.is_success()) => {}
            Packet::SubAck(ack) => {
                return Err(LoadError::Refused(format!("SUBACK {:?}", ack.reason_codes)));
            }
            other => {
                return Err(LoadError::Unexpected(format!(
                    "{:?} instead of SUBACK",
                    other.packet_type()
                )));
            }
        }
    }
    Ok((s, buf))
}

/// Connects with the `session` asked for (and subscribes to `filter` when given), within
/// [`HANDSHAKE_TIMEOUT`]. Returns the stream and the read buffer, which may already hold the
/// start of the next packet.
pub async fn connect(
    p: &ClientParams,
    client_id: &str,
    filter: Option<(&str, QoS)>,
    session: SessionKind,
) -> Result<(TcpStream, BytesMut), LoadError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(p, client_id, filter, session))
        .await
        .map_err(|_| LoadError::Timeout("CONNECT/SUBSCRIBE"))?
}

/// A PUBLISH encoded once by the codec; each message copies it and patches the packet
/// identifier and the payload header in place.
#[derive(Debug, Clone)]
pub struct PublishTemplate {
    wire: Vec<u8>,
    payload_at: usize,
    packet_id_at: Option<usize>,
}

impl PublishTemplate {
    /// Encodes the template. `payload_len` must be at least [`HEADER_LEN`].
    pub fn new(
        topic: &str,
        qos: QoS,
        payload_len: usize,
        v: ProtocolVersion,
    ) -> Result<Self, LoadError> {
        if payload_len < HEADER_LEN {
            return Err(LoadError::Config(format!(
                "payload must be at least {HEADER_LEN} bytes"
            )));
        }
        let publish = Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id: if qos == QoS::AtMostOnce { 0 } else { 1 },
            payload: Bytes::from(vec![0u8; payload_len]),
            properties: PublishProperties::default(),
        });
        let mut out = BytesMut::new();
        encode(&publish, v, &mut out)?;
        let payload_at = out.len() - payload_len;
        // Before the payload: [packet id (2)] [5.0: property length 0 (1)].
        let props = usize::from(v == ProtocolVersion::V5);
        let packet_id_at = (qos != QoS::AtMostOnce).then(|| payload_at - props - 2);
        Ok(PublishTemplate {
            wire: out.to_vec(),
            payload_at,
            packet_id_at,
        })
    }

    /// Encoded length of one message.
    pub fn len(&self) -> usize {
        self.wire.len()
    }

    /// Always false: a PUBLISH has a fixed header.
    pub fn is_empty(&self) -> bool {
        self.wire.is_empty()
    }

    /// Appends one message with `packet_id` (ignored for QoS 0) and `stamp` to `out`.
    pub fn write(&self, out: &mut BytesMut, packet_id: u16, stamp: &Stamp) {
        let start = out.len();
        out.extend_from_slice(&self.wire);
        let msg = &mut out[start..];
        if let Some(at) = self.packet_id_at {
            msg[at..at + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
        // The payload is at least HEADER_LEN long (checked in `new`).
        stamp.write(&mut msg[self.payload_at..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(qos: QoS, v: ProtocolVersion, len: usize) {
        let t = PublishTemplate::new("bench/p2p/7", qos, len, v).unwrap();
        let mut out = BytesMut::new();
        let s1 = Stamp {
            sent_ns: 11,
            seq: 0,
            publisher: 7,
            lag_ns: 0,
        };
        let s2 = Stamp {
            sent_ns: 22,
            seq: 1,
            publisher: 7,
            lag_ns: 0,
        };
        t.write(&mut out, 500, &s1);
        t.write(&mut out, 501, &s2);
        assert_eq!(out.len(), 2 * t.len());
        for (id, s) in [(500u16, s1), (501, s2)] {
            let Some(Packet::Publish(p)) = decode(&mut out, v, MAX_PACKET_SIZE).unwrap() else {
                panic!("not a publish");
            };
            assert_eq!(p.topic, "bench/p2p/7");
            assert_eq!(p.qos, qos);
            assert_eq!(p.payload.len(), len);
            assert_eq!(p.packet_id, if qos == QoS::AtMostOnce { 0 } else { id });
            assert_eq!(Stamp::read(&p.payload), Some(s));
        }
        assert!(out.is_empty());
    }

    #[test]
    fn template_patches_decode_with_the_codec() {
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                for len in [HEADER_LEN, 64, 300] {
                    check(qos, v, len);
                }
            }
        }
    }

    #[test]
    fn too_small_payload_is_refused() {
        assert!(
            PublishTemplate::new("t", QoS::AtMostOnce, HEADER_LEN - 1, ProtocolVersion::V311)
                .is_err()
        );
    }
}
