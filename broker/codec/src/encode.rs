//! Encoder: writes packets into caller-owned buffers; `encoded_len` predicts the exact size.

use bytes::{BufMut, BytesMut};

use crate::error::EncodeError;
use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubResponse, PublishView, SubAck, Subscribe,
    UnsubAck, Unsubscribe,
};
use crate::reason::ReasonCode;
use crate::types::{PacketType, ProtocolVersion, QoS};
use crate::wire::{
    self, MAX_VARIABLE_BYTE_INTEGER, binary_len, string_len, vbi_len, write_binary, write_string,
};

/// Encodes `packet` for a connection speaking `version`, appending it to `out`.
///
/// CONNECT is encoded in its own `protocol_version`. MQTT 3.1.1 packets never carry
/// properties: for 3.1.1 the property structs (and the reason codes of PUBACK, PUBREC,
/// PUBREL, PUBCOMP, UNSUBACK and DISCONNECT) are not written. On error `out` is unchanged.
/// What this writes, [`crate::decode`] accepts and decodes to an equal packet.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    match packet {
        Packet::Publish(p) => return encode_publish(&p.as_view(), version, out),
        Packet::ConnAck(c) => return encode_connack(c, version, out),
        _ => {}
    }
    let body = body_len(packet, version);
    let first = first_byte(packet);
    framed(first, body, out, |out| write_body(packet, version, out))
}

/// Encodes the PUBLISH `p` (fields borrowed) for a connection speaking `version`, appending
/// it to `out`: the same bytes [`encode`] writes for the equal [`crate::Publish`]. On error
/// `out` is unchanged.
pub fn encode_publish(
    p: &PublishView<'_>,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let v5 = version == ProtocolVersion::V5;
    let body = publish_body_len(p, v5);
    framed(publish_first_byte(p), body, out, |out| {
        write_publish(p, v5, out)
    })
}

/// Encodes the CONNACK `c` for a connection speaking `version`, appending it to `out`: what
/// [`encode`] writes for `Packet::ConnAck` of it, without the box a [`Packet`] holds it in
/// (every connection sends one). On error `out` is unchanged.
pub fn encode_connack(
    c: &ConnAck,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let v5 = version == ProtocolVersion::V5;
    framed(
        type_first_byte(PacketType::ConnAck),
        connack_body_len(c, v5),
        out,
        |out| write_connack(c, v5, out),
    )
}

/// The exact number of bytes [`encode_publish`] writes for `p` in `version`.
pub fn publish_encoded_len(p: &PublishView<'_>, version: ProtocolVersion) -> usize {
    let body = publish_body_len(p, version == ProtocolVersion::V5);
    1 + vbi_len(body) + body
}

/// Writes the fixed header (`first` byte and the remaining length `body`), then the body
/// with `write`; checks that `write` wrote exactly `body` bytes (debug builds) and leaves
/// `out` as it was on error.
fn framed(
    first: u8,
    body: usize,
    out: &mut BytesMut,
    write: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    if body > MAX_VARIABLE_BYTE_INTEGER as usize {
        return Err(EncodeError::PacketTooLarge(body));
    }
    let start = out.len();
    out.reserve(1 + vbi_len(body) + body);
    out.put_u8(first);
    wire::write_vbi(body, out);
    let body_start = out.len();
    if let Err(e) = write(out) {
        out.truncate(start);
        return Err(e);
    }
    debug_assert_eq!(
        out.len() - body_start,
        body,
        "encoded_len disagrees with encode"
    );
    Ok(())
}

/// The exact number of bytes [`encode`] writes for `packet` in `version` (fixed header
/// included), computed without encoding. For packets `encode` would reject, the figure is what
/// the packet would take.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let body = body_len(packet, version);
    1 + vbi_len(body) + body
}

fn first_byte(packet: &Packet) -> u8 {
    if let Packet::Publish(p) = packet {
        return publish_first_byte(&p.as_view());
    }
    type_first_byte(packet.packet_type())
}

/// The first byte of a packet of type `t` other than PUBLISH (whose flags vary).
fn type_first_byte(t: PacketType) -> u8 {
    // required_flags is Some for every type but PUBLISH.
    ((t as u8) << 4) | t.required_flags().unwrap_or(0)
}

fn connack_body_len(c: &ConnAck, v5: bool) -> usize {
    2 + if v5 { c.properties.encoded_len() } else { 0 }
}

fn publish_first_byte(p: &PublishView<'_>) -> u8 {
    ((PacketType::Publish as u8) << 4)
        | (u8::from(p.dup && p.qos != QoS::AtMostOnce) << 3)
        | (p.qos.as_u8() << 1)
        | u8::from(p.retain)
}

fn publish_body_len(p: &PublishView<'_>, v5: bool) -> usize {
    string_len(p.topic)
        + if p.qos == QoS::AtMostOnce { 0 } else { 2 }
        + if v5 { p.properties.encoded_len() } else { 0 }
        + p.payload.len()
}

fn body_len(packet: &Packet, v: ProtocolVersion) -> usize {
    let v5 = v == ProtocolVersion::V5;
    match packet {
        Packet::Connect(c) => connect_len(c),
        Packet::ConnAck(c) => connack_body_len(c, v5),
        Packet::Publish(p) => publish_body_len(&p.as_view(), v5),
        Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
            2 + if v5 {
                reason_and_props_len(
                    p.reason_code,
                    p.properties.encoded_len(),
                    p.properties.is_empty(),
                )
            } else {
                0
            }
        }
        Packet::Subscribe(s) => {
            2 + if v5 { s.properties.encoded_len() } else { 0 }
                + s.filters
                    .iter()
                    .map(|f| string_len(&f.filter) + 1)
                    .sum::<usize>()
        }
        Packet::SubAck(s) => {
            2 + if v5 { s.properties.encoded_len() } else { 0 } + s.reason_codes.len()
        }
        Packet::Unsubscribe(u) => {
            2 + if v5 { u.properties.encoded_len() } else { 0 }
                + u.filters.iter().map(string_len).sum::<usize>()
        }
        Packet::UnsubAck(u) => {
            2 + if v5 {
                u.properties.encoded_len() + u.reason_codes.len()
            } else {
                0
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        // A non-success DISCONNECT always carries its Property Length (even 0), as Mosquitto
        // sends it: some clients (rumqttc 0.25) cannot parse the reason code alone.
        Packet::Disconnect(d) if v5 => reason_and_props_len(
            d.reason_code,
            d.properties.encoded_len(),
            d.properties.is_empty() && d.reason_code == ReasonCode::SUCCESS,
        ),
        Packet::Disconnect(_) => 0,
        Packet::Auth(a) => reason_and_props_len(
            a.reason_code,
            a.properties.encoded_len(),
            a.properties.is_empty(),
        ),
    }
}

/// Reason code and properties that are omitted when they carry nothing: no bytes for success
/// without properties, the reason byte alone without properties, both otherwise.
fn reason_and_props_len(code: ReasonCode, props_len: usize, props_empty: bool) -> usize {
    match (code == ReasonCode::SUCCESS, props_empty) {
        (true, true) => 0,
        (false, true) => 1,
        (_, false) => 1 + props_len,
    }
}

fn connect_len(c: &Connect) -> usize {
    let v5 = c.protocol_version == ProtocolVersion::V5;
    let mut n = 6 + 1 + 1 + 2; // protocol name, level, flags, keep alive
    if v5 {
        n += c.properties.encoded_len();
    }
    n += string_len(&c.client_id);
    if let Some(w) = &c.will {
        if v5 {
            n += w.properties.encoded_len();
        }
        n += string_len(&w.topic) + binary_len(&w.payload);
    }
    n += c.username.as_ref().map_or(0, string_len);
    n += c.password.as_ref().map_or(0, |p| binary_len(p));
    n
}

fn write_body(packet: &Packet, v: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    let v5 = v == ProtocolVersion::V5;
    match packet {
        Packet::Connect(c) => write_connect(c, out),
        Packet::ConnAck(c) => write_connack(c, v5, out),
        Packet::Publish(p) => write_publish(&p.as_view(), v5, out),
        Packet::PubAck(p) => write_pub_response(PacketType::PubAck, p, v5, out),
        Packet::PubRec(p) => write_pub_response(PacketType::PubRec, p, v5, out),
        Packet::PubRel(p) => write_pub_response(PacketType::PubRel, p, v5, out),
        Packet::PubComp(p) => write_pub_response(PacketType::PubComp, p, v5, out),
        Packet::Subscribe(s) => write_subscribe(s, v5, out),
        Packet::SubAck(s) => write_suback(s, v5, out),
        Packet::Unsubscribe(u) => write_unsubscribe(u, v5, out),
        Packet::UnsubAck(u) => write_unsuback(u, v5, out),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => write_disconnect(d, v5, out),
        Packet::Auth(a) => write_auth(a, v5, out),
    }
}

fn put_packet_id(id: u16, t: PacketType, out: &mut BytesMut) -> Result<(), EncodeError> {
    if id == 0 {
        return Err(EncodeError::ZeroPacketId(t));
    }
    out.put_u16(id);
    Ok(())
}

fn check_reason(code: ReasonCode, t: PacketType) -> Result<(), EncodeError> {
    if code.allowed_in(t) {
        Ok(())
    } else {
        Err(EncodeError::InvalidReasonCode { packet: t, code })
    }
}

fn write_connect(c: &Connect, out: &mut BytesMut) -> Result<(), EncodeError> {
    let v5 = c.protocol_version == ProtocolVersion::V5;
    if !v5 && c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::PasswordWithoutUsername);
    }
    out.put_slice(&[0, 4, b'M', b'Q', b'T', b'T', c.protocol_version.level()]);
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos.as_u8() << 3) | (u8::from(w.retain) << 5);
    }
    flags |= u8::from(c.password.is_some()) << 6;
    flags |= u8::from(c.username.is_some()) << 7;
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        c.properties.write(out)?;
    }
    write_string(&c.client_id, out)?;
    if let Some(w) = &c.will {
        if v5 {
            w.properties.write(out)?;
        }
        write_string(&w.topic, out)?;
        write_binary(&w.payload, out)?;
    }
    if let Some(u) = &c.username {
        write_string(u, out)?;
    }
    if let Some(p) = &c.password {
        write_binary(p, out)?;
    }
    Ok(())
}

fn write_connack(c: &ConnAck, v5: bool, out: &mut BytesMut) -> Result<(), EncodeError> {
    out.put_u8(u8::from(c.session_present));
    if v5 {
        check_reason(c.reason_code, PacketType::ConnAck)?;
        out.put_u8(c.reason_code.0);
        c.properties.write(out)
    } else {
        let rc = c
            .reason_code
            .v311_connack_return_code()
            .ok_or(EncodeError::NoV311ConnAckCode(c.reason_code))?;
        out.put_u8(rc);
        Ok(())
    }
}

fn write_publish(p: &PublishView<'_>, v5: bool, out: &mut BytesMut) -> Result<(), EncodeError> {
    write_string(p.topic, out)?;
    if p.qos != QoS::AtMostOnce {
        put_packet_id(p.packet_id, PacketType::Publish, out)?;
    }
    if v5 {
        p.properties.write(out)?;
    }
    out.put_slice(p.payload);
    Ok(())
}

fn write_pub_response(
    t: PacketType,
    p: &PubResponse,
    v5: bool,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    put_packet_id(p.packet_id, t, out)?;
    if v5 {
        check_reason(p.reason_code, t)?;
        if p.reason_code != ReasonCode::SUCCESS || !p.properties.is_empty() {
            out.put_u8(p.reason_code.0);
        }
        if !p.properties.is_empty() {
            p.properties.write(out)?;
        }
    }
    Ok(())
}

fn write_subscribe(s: &Subscribe, v5: bool, out: &mut BytesMut) -> Result<(), EncodeError> {
    if s.filters.is_empty() {
        return Err(EncodeError::EmptyPayload(PacketType::Subscribe));
    }
    put_packet_id(s.packet_id, PacketType::Subscribe, out)?;
    if v5 {
        s.properties.write(out)?;
    }
    for f in &s.filters {
        write_string(&f.filter, out)?;
        let o = &f.options;
        let mut opts = o.qos.as_u8();
        if v5 {
            opts |= u8::from(o.no_local) << 2
                | u8::from(o.retain_as_published) << 3
                | (o.retain_handling as u8) << 4;
        }
        out.put_u8(opts);
    }
    Ok(())
}

fn write_suback(s: &SubAck, v5: bool, out: &mut BytesMut) -> Result<(), EncodeError> {
    put_packet_id(s.packet_id, PacketType::SubAck, out)?;
    if v5 {
        s.properties.write(out)?;
        for c in &s.reason_codes {
            check_reason(*c, PacketType::SubAck)?;
            out.put_u8(c.0);
        }
    } else {
        for c in &s.reason_codes {
            out.put_u8(c.v311_suback_return_code());
        }
    }
    Ok(())
}

fn write_unsubscribe(u: &Unsubscribe, v5: bool, out: &mut BytesMut) -> Result<(), EncodeError> {
    if u.filters.is_empty() {
        return Err(EncodeError::EmptyPayload(PacketType::Unsubscribe));
    }
    put_packet_id(u.packet_id, PacketType::Unsubscribe, out)?;
    if v5 {
        u.properties.write(out)?;
    }
    for f in &u.filters {
        write_string(f, out)?;
    }
    Ok(())
}

fn write_unsuback(u: &UnsubAck, v5: bool, out: &mut BytesMut) -> Result<(), EncodeError> {
    put_packet_id(u.packet_id, PacketType::UnsubAck, out)?;
    if v5 {
        u.properties.write(out)?;
        for c in &u.reason_codes {
            check_reason(*c, PacketType::UnsubAck)?;
            out.put_u8(c.0);
        }
    }
    Ok(())
}

fn write_disconnect(d: &Disconnect, v5: bool, out: &mut BytesMut) -> Result<(), EncodeError> {
    if !v5 {
        return Ok(());
    }
    check_reason(d.reason_code, PacketType::Disconnect)?;
    if d.reason_code != ReasonCode::SUCCESS || !d.properties.is_empty() {
        out.put_u8(d.reason_code.0);
        d.properties.write(out)?;
    }
    Ok(())
}

fn write_auth(a: &Auth, v5: bool, out: &mut BytesMut) -> Result<(), EncodeError> {
    if !v5 {
        return Err(EncodeError::NotInVersion(PacketType::Auth));
    }
    check_reason(a.reason_code, PacketType::Auth)?;
    if a.reason_code != ReasonCode::SUCCESS || !a.properties.is_empty() {
        out.put_u8(a.reason_code.0);
    }
    if !a.properties.is_empty() {
        a.properties.write(out)?;
    }
    Ok(())
}
