//! Streaming decoder: fixed header first (size checked before buffering), then one body.

use bytes::{Buf, BytesMut};

use crate::error::DecodeError;
use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubResponse, Publish, SubAck, Subscribe,
    SubscribeFilter, UnsubAck, Unsubscribe, Will,
};
use crate::props::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use crate::reason::ReasonCode;
use crate::types::{PacketType, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
use crate::wire::{Reader, read_vbi};

/// A decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Packet type.
    pub packet_type: PacketType,
    /// The low nibble of the first byte.
    pub flags: u8,
    /// Remaining length: the size of the variable header and payload.
    pub remaining_length: u32,
    /// Size of the fixed header itself (2 to 5 bytes).
    pub header_len: usize,
}

impl FixedHeader {
    /// Size of the whole packet: fixed header plus remaining length.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_length as usize
    }
}

/// Reads the fixed header at the front of `buf` without consuming anything.
///
/// `Ok(None)`: more bytes are needed. Checks the packet type and the fixed-header flags
/// [MQTT-2.1.3-1] (for PUBLISH: QoS 3 and DUP on QoS 0).
pub fn peek_header(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let type_nibble = first >> 4;
    let flags = first & 0x0F;
    let packet_type =
        PacketType::from_u8(type_nibble).ok_or(DecodeError::ReservedPacketType(type_nibble))?;
    match packet_type.required_flags() {
        Some(required) if flags != required => {
            return Err(DecodeError::InvalidHeaderFlags {
                packet: packet_type,
                flags,
            });
        }
        Some(_) => {}
        None => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::InvalidQoS);
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::DupOnQoS0);
            }
        }
    }
    let Some((remaining_length, vbi_len)) = read_vbi(&buf[1..])? else {
        return Ok(None);
    };
    Ok(Some(FixedHeader {
        packet_type,
        flags,
        remaining_length,
        header_len: 1 + vbi_len,
    }))
}

/// Decodes one packet from the front of `buf`.
///
/// - `Ok(None)`: the packet is not complete yet; nothing is consumed. Call again when more
///   bytes have arrived.
/// - `Ok(Some(packet))`: exactly that packet's bytes were removed from the front of `buf`;
///   strings and payloads share that memory (no copy).
/// - `Err(_)`: a protocol violation; the connection must be closed.
///
/// The whole packet size (fixed header + remaining length) is checked against
/// `max_packet_size` as soon as the fixed header is complete, before the body arrives, so a
/// hostile length never makes the caller buffer it. CONNECT is decoded whatever `version`
/// says (it carries its own); every other packet is decoded as `version`. MQTT 3.1.1 packets
/// never carry properties.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = peek_header(buf)? else {
        return Ok(None);
    };
    let size = header.packet_len();
    if size as u64 > u64::from(max_packet_size) {
        return Err(DecodeError::PacketTooLarge {
            size: size as u64,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    if let Some(packet) = decode_short(header, buf)? {
        buf.advance(size);
        return Ok(Some(packet));
    }
    let mut frame = buf.split_to(size).freeze();
    frame.advance(header.header_len);
    let mut r = Reader::new(frame);
    let packet = decode_body(header, &mut r, version)?;
    if !r.is_empty() {
        return Err(DecodeError::TrailingBytes(r.remaining()));
    }
    Ok(Some(packet))
}

/// The protocol version a CONNECT at the front of `buf` asks for, if the buffer starts with a
/// CONNECT whose variable header has arrived and names level 4 or 5. Lets a server answer a
/// CONNECT that fails to decode in the client's own version.
pub fn peek_connect_version(buf: &[u8]) -> Option<ProtocolVersion> {
    let header = peek_header(buf).ok()??;
    if header.packet_type != PacketType::Connect {
        return None;
    }
    let body = buf.get(header.header_len..)?;
    match body {
        [0, 4, b'M', b'Q', b'T', b'T', level, ..] => ProtocolVersion::from_level(*level),
        _ => None,
    }
}

fn decode_body(h: FixedHeader, r: &mut Reader, v: ProtocolVersion) -> Result<Packet, DecodeError> {
    let v5 = v == ProtocolVersion::V5;
    Ok(match h.packet_type {
        PacketType::Connect => Packet::Connect(Box::new(decode_connect(r)?)),
        PacketType::ConnAck => Packet::ConnAck(Box::new(decode_connack(r, v5)?)),
        PacketType::Publish => Packet::Publish(decode_publish(h.flags, r, v5)?),
        PacketType::PubAck => Packet::PubAck(decode_pub_response(PacketType::PubAck, r, v5)?),
        PacketType::PubRec => Packet::PubRec(decode_pub_response(PacketType::PubRec, r, v5)?),
        PacketType::PubRel => Packet::PubRel(decode_pub_response(PacketType::PubRel, r, v5)?),
        PacketType::PubComp => Packet::PubComp(decode_pub_response(PacketType::PubComp, r, v5)?),
        PacketType::Subscribe => Packet::Subscribe(decode_subscribe(r, v5)?),
        PacketType::SubAck => Packet::SubAck(decode_suback(r, v5)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(decode_unsubscribe(r, v5)?),
        PacketType::UnsubAck => Packet::UnsubAck(decode_unsuback(r, v5)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(decode_disconnect(r, v5)?),
        PacketType::Auth if v5 => Packet::Auth(decode_auth(r)?),
        PacketType::Auth => return Err(DecodeError::ReservedPacketType(15)),
    })
}

/// A PUBACK, PUBREC, PUBREL or PUBCOMP that is nothing but its fixed header and packet
/// identifier (Remaining Length 2; in 5.0 that means success without properties), complete
/// at the front of `buf`: consumed and returned as (type, identifier), for a receiver's hot
/// path that handles the acknowledgement without building a [`Packet`] (the large enum is
/// copied out of the decoder for every packet). `None`, nothing consumed, for anything else:
/// other packets, a longer or incomplete acknowledgement, fixed-header flags [`decode`]
/// refuses. Identifier 0 is the same error as in [`decode`] [MQTT-2.2.1-3].
pub fn take_short_ack(buf: &mut BytesMut) -> Option<Result<(PacketType, u16), DecodeError>> {
    let ack = short_ack(buf)?;
    if ack.is_ok() {
        buf.advance(4);
    }
    Some(ack)
}

/// The acknowledgement [`take_short_ack`] takes, read from the front of `bytes` without
/// consuming it: `None` unless the first four bytes are a bare acknowledgement.
fn short_ack(bytes: &[u8]) -> Option<Result<(PacketType, u16), DecodeError>> {
    let (t, id) = match bytes.get(..4)? {
        &[first, 2, hi, lo] => (short_ack_type(first)?, u16::from_be_bytes([hi, lo])),
        _ => return None,
    };
    Some(if id == 0 {
        Err(DecodeError::ZeroPacketId(t))
    } else {
        Ok((t, id))
    })
}

/// The acknowledgement type of a fixed header's first byte, with its required flags.
fn short_ack_type(first: u8) -> Option<PacketType> {
    match first {
        0x40 => Some(PacketType::PubAck),
        0x50 => Some(PacketType::PubRec),
        0x62 => Some(PacketType::PubRel),
        0x70 => Some(PacketType::PubComp),
        _ => None,
    }
}

/// The packets that are nothing but a fixed header and a packet identifier (PUBACK, PUBREC,
/// PUBREL, PUBCOMP with Remaining Length 2, 5.0 included: no reason code means success; see
/// [`short_ack`]) or a bare fixed header (PINGREQ, PINGRESP), decoded in place from the
/// complete packet at the front of `buf`, whose fixed header `h` is: the caller then drops
/// its bytes instead of splitting them off into a shared frame (a reference count taken and
/// released per packet, the bulk of a PUBACK's decode). `Ok(None)` for every other packet.
/// Same results as the general path.
fn decode_short(h: FixedHeader, buf: &[u8]) -> Result<Option<Packet>, DecodeError> {
    match (h.packet_type, h.remaining_length, h.header_len) {
        (PacketType::PingReq, 0, 2) => return Ok(Some(Packet::PingReq)),
        (PacketType::PingResp, 0, 2) => return Ok(Some(Packet::PingResp)),
        _ => {}
    }
    let Some(ack) = short_ack(buf) else {
        return Ok(None);
    };
    let (t, id) = ack?;
    let response = PubResponse::new(id);
    Ok(Some(match t {
        PacketType::PubAck => Packet::PubAck(response),
        PacketType::PubRec => Packet::PubRec(response),
        PacketType::PubRel => Packet::PubRel(response),
        _ => Packet::PubComp(response),
    }))
}

fn packet_id(r: &mut Reader, t: PacketType) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::ZeroPacketId(t)),
        id => Ok(id),
    }
}

fn reason(r: &mut Reader, t: PacketType) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode(r.u8()?);
    if !code.allowed_in(t) {
        return Err(DecodeError::InvalidReasonCode {
            packet: t,
            code: code.0,
        });
    }
    Ok(code)
}

fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol_version = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQTT" | b"MQIsdp", level) => return Err(DecodeError::UnsupportedProtocolVersion(level)),
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let v5 = protocol_version == ProtocolVersion::V5;
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && will_qos != 0 {
        return Err(DecodeError::WillQoSWithoutWill);
    }
    if !will_flag && will_retain {
        return Err(DecodeError::WillRetainWithoutWill);
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::WillQoS3)?;
    if !v5 && password_flag && !username_flag {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        ConnectProperties::decode(r, PacketType::Connect)?
    } else {
        ConnectProperties::default()
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 {
            WillProperties::decode(r, PacketType::Connect)?
        } else {
            WillProperties::default()
        };
        let topic = r.string()?;
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol_version,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn decode_connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::InvalidConnAckFlags(flags));
    }
    let (reason_code, properties) = if v5 {
        let code = reason(r, PacketType::ConnAck)?;
        (code, ConnAckProperties::decode(r, PacketType::ConnAck)?)
    } else {
        let rc = r.u8()?;
        let code = ReasonCode::from_v311_connack_return_code(rc).ok_or(
            DecodeError::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code: rc,
            },
        )?;
        (code, ConnAckProperties::default())
    };
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        reason_code,
        properties,
    })
}

fn decode_publish(flags: u8, r: &mut Reader, v5: bool) -> Result<Publish, DecodeError> {
    // peek_header has rejected QoS 3 and DUP on QoS 0.
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(r, PacketType::Publish)?
    };
    let properties = if v5 {
        PublishProperties::decode(r, PacketType::Publish)?
    } else {
        PublishProperties::default()
    };
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        payload: r.rest(),
        properties,
    })
}

fn decode_pub_response(
    t: PacketType,
    r: &mut Reader,
    v5: bool,
) -> Result<PubResponse, DecodeError> {
    let mut p = PubResponse::new(packet_id(r, t)?);
    if v5 && !r.is_empty() {
        p.reason_code = reason(r, t)?;
        if !r.is_empty() {
            p.properties = AckProperties::decode(r, t)?;
        }
    }
    Ok(p)
}

fn decode_subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r, PacketType::Subscribe)?;
    let properties = if v5 {
        SubscribeProperties::decode(r, PacketType::Subscribe)?
    } else {
        SubscribeProperties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let opts = r.u8()?;
        let reserved = if v5 { 0xC0 } else { 0xFC };
        if opts & reserved != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions(opts));
        }
        let qos = QoS::from_u8(opts & 0b11).ok_or(DecodeError::InvalidQoS)?;
        let retain_handling = RetainHandling::from_u8((opts >> 4) & 0b11)
            .ok_or(DecodeError::InvalidRetainHandling)?;
        let options = SubscriptionOptions {
            qos,
            no_local: opts & 0b0100 != 0,
            retain_as_published: opts & 0b1000 != 0,
            retain_handling,
        };
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptySubscribe);
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

fn decode_suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r, PacketType::SubAck)?;
    let properties = if v5 {
        AckProperties::decode(r, PacketType::SubAck)?
    } else {
        AckProperties::default()
    };
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let code = if v5 {
            reason(r, PacketType::SubAck)?
        } else {
            match r.u8()? {
                c @ (0x00 | 0x01 | 0x02 | 0x80) => ReasonCode(c),
                c => {
                    return Err(DecodeError::InvalidReasonCode {
                        packet: PacketType::SubAck,
                        code: c,
                    });
                }
            }
        };
        reason_codes.push(code);
    }
    Ok(SubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

fn decode_unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r, PacketType::Unsubscribe)?;
    let properties = if v5 {
        UnsubscribeProperties::decode(r, PacketType::Unsubscribe)?
    } else {
        UnsubscribeProperties::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptyUnsubscribe);
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn decode_unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r, PacketType::UnsubAck)?;
    let mut ack = UnsubAck {
        packet_id,
        reason_codes: Vec::new(),
        properties: AckProperties::default(),
    };
    if v5 {
        ack.properties = AckProperties::decode(r, PacketType::UnsubAck)?;
        ack.reason_codes.reserve(r.remaining());
        while !r.is_empty() {
            ack.reason_codes.push(reason(r, PacketType::UnsubAck)?);
        }
    }
    Ok(ack)
}

fn decode_disconnect(r: &mut Reader, v5: bool) -> Result<Disconnect, DecodeError> {
    let mut d = Disconnect::default();
    if v5 && !r.is_empty() {
        d.reason_code = reason(r, PacketType::Disconnect)?;
        if !r.is_empty() {
            d.properties = DisconnectProperties::decode(r, PacketType::Disconnect)?;
        }
    }
    Ok(d)
}

fn decode_auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut a = Auth::default();
    if !r.is_empty() {
        a.reason_code = reason(r, PacketType::Auth)?;
        if !r.is_empty() {
            a.properties = AuthProperties::decode(r, PacketType::Auth)?;
        }
    }
    Ok(a)
}
