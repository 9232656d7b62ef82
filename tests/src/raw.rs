//! Raw-socket MQTT: packets built by hand from the specification, and a small reader for what
//! the broker sends back. Deliberately independent of `halyard-codec` so that a bug shared by
//! the broker's encoder and decoder cannot hide itself; it also lets tests write packets that
//! a correct codec refuses to produce (bad flags, QoS 3, wrong lengths).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Protocol version of a raw connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// MQTT 5 property identifiers used by the tests.
pub mod prop {
    /// Payload Format Indicator (byte).
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    /// Message Expiry Interval (u32).
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    /// Content Type (string).
    pub const CONTENT_TYPE: u8 = 0x03;
    /// Response Topic (string).
    pub const RESPONSE_TOPIC: u8 = 0x08;
    /// Correlation Data (binary).
    pub const CORRELATION_DATA: u8 = 0x09;
    /// Subscription Identifier (varint).
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    /// Session Expiry Interval (u32).
    pub const SESSION_EXPIRY: u8 = 0x11;
    /// Assigned Client Identifier (string).
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    /// Server Keep Alive (u16).
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    /// Authentication Method (string).
    pub const AUTH_METHOD: u8 = 0x15;
    /// Authentication Data (binary).
    pub const AUTH_DATA: u8 = 0x16;
    /// Will Delay Interval (u32).
    pub const WILL_DELAY: u8 = 0x18;
    /// Reason String (string).
    pub const REASON_STRING: u8 = 0x1F;
    /// Receive Maximum (u16).
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    /// Topic Alias Maximum (u16).
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    /// Topic Alias (u16).
    pub const TOPIC_ALIAS: u8 = 0x23;
    /// Maximum QoS (byte).
    pub const MAXIMUM_QOS: u8 = 0x24;
    /// User Property (string pair).
    pub const USER_PROPERTY: u8 = 0x26;
    /// Maximum Packet Size (u32).
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
}

/// One MQTT 5 property value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prop {
    /// One-byte integer.
    Byte(u8, u8),
    /// Two-byte integer.
    U16(u8, u16),
    /// Four-byte integer.
    U32(u8, u32),
    /// Variable byte integer.
    VarInt(u8, u32),
    /// UTF-8 string.
    Str(u8, String),
    /// Binary data.
    Bin(u8, Vec<u8>),
    /// UTF-8 string pair (User Property).
    Pair(u8, String, String),
}

impl Prop {
    /// The property identifier.
    pub fn id(&self) -> u8 {
        match self {
            Prop::Byte(i, _)
            | Prop::U16(i, _)
            | Prop::U32(i, _)
            | Prop::VarInt(i, _)
            | Prop::Str(i, _)
            | Prop::Bin(i, _)
            | Prop::Pair(i, _, _) => *i,
        }
    }
}

/// A property list (MQTT 5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props(pub Vec<Prop>);

impl Props {
    /// No properties.
    pub fn new() -> Props {
        Props(Vec::new())
    }
    /// Adds a property (builder style).
    pub fn with(mut self, p: Prop) -> Props {
        self.0.push(p);
        self
    }
    /// First property with this id.
    pub fn get(&self, id: u8) -> Option<&Prop> {
        self.0.iter().find(|p| p.id() == id)
    }
    /// Every property with this id.
    pub fn all(&self, id: u8) -> Vec<&Prop> {
        self.0.iter().filter(|p| p.id() == id).collect()
    }
    /// Numeric value of the first property with this id.
    pub fn int(&self, id: u8) -> Option<u32> {
        match self.get(id)? {
            Prop::Byte(_, v) => Some(u32::from(*v)),
            Prop::U16(_, v) => Some(u32::from(*v)),
            Prop::U32(_, v) | Prop::VarInt(_, v) => Some(*v),
            _ => None,
        }
    }
    /// String value of the first property with this id.
    pub fn str(&self, id: u8) -> Option<&str> {
        match self.get(id)? {
            Prop::Str(_, s) => Some(s),
            _ => None,
        }
    }
    /// Binary value of the first property with this id.
    pub fn bin(&self, id: u8) -> Option<&[u8]> {
        match self.get(id)? {
            Prop::Bin(_, b) => Some(b),
            _ => None,
        }
    }
    /// All Subscription Identifiers, in order.
    pub fn subscription_ids(&self) -> Vec<u32> {
        self.all(prop::SUBSCRIPTION_ID)
            .into_iter()
            .filter_map(|p| match p {
                Prop::VarInt(_, v) => Some(*v),
                _ => None,
            })
            .collect()
    }
    /// All User Properties, in order.
    pub fn user(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|p| match p {
                Prop::Pair(_, k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }

    /// Encodes the property length and the properties.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        for p in &self.0 {
            body.push(p.id());
            match p {
                Prop::Byte(_, v) => body.push(*v),
                Prop::U16(_, v) => body.extend_from_slice(&v.to_be_bytes()),
                Prop::U32(_, v) => body.extend_from_slice(&v.to_be_bytes()),
                Prop::VarInt(_, v) => put_varint(&mut body, *v),
                Prop::Str(_, s) => put_str(&mut body, s),
                Prop::Bin(_, b) => put_bin(&mut body, b),
                Prop::Pair(_, k, v) => {
                    put_str(&mut body, k);
                    put_str(&mut body, v);
                }
            }
        }
        put_varint(out, body.len() as u32);
        out.extend_from_slice(&body);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Props, String> {
        let len = r.varint()? as usize;
        let mut sub = Reader::new(r.take(len)?);
        let mut v = Vec::new();
        while !sub.is_empty() {
            let id = sub.u8()?;
            let p = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => Prop::Byte(id, sub.u8()?),
                0x13 | 0x21 | 0x22 | 0x23 => Prop::U16(id, sub.u16()?),
                0x02 | 0x11 | 0x18 | 0x27 => Prop::U32(id, sub.u32()?),
                0x0B => Prop::VarInt(id, sub.varint()?),
                0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F => Prop::Str(id, sub.string()?),
                0x09 | 0x16 => Prop::Bin(id, sub.binary()?),
                0x26 => Prop::Pair(id, sub.string()?, sub.string()?),
                other => return Err(format!("unknown property id 0x{other:02X}")),
            };
            v.push(p);
        }
        Ok(Props(v))
    }
}

/// Appends a variable byte integer.
pub fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            break;
        }
    }
}

/// Appends a length-prefixed UTF-8 string.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bin(out, s.as_bytes());
}

/// Appends length-prefixed binary data.
pub fn put_bin(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// Frames a body under a fixed header byte.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    put_varint(&mut out, body.len() as u32);
    out.extend_from_slice(body);
    out
}

/// A Will message in CONNECT.
#[derive(Debug, Clone, Default)]
pub struct Will {
    /// Will Topic.
    pub topic: String,
    /// Will Payload.
    pub payload: Vec<u8>,
    /// Will QoS.
    pub qos: u8,
    /// Will Retain.
    pub retain: bool,
    /// Will Properties (5.0).
    pub props: Props,
}

/// A CONNECT packet; every field can be set to an invalid value on purpose.
#[derive(Debug, Clone)]
pub struct Connect {
    /// Protocol Name (normally "MQTT").
    pub protocol_name: String,
    /// Protocol Level (4 or 5).
    pub level: u8,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean: bool,
    /// Sets the reserved flag bit 0 (a protocol violation, [MQTT-3.1.2-3]).
    pub reserved_flag: bool,
    /// Keep Alive in seconds.
    pub keepalive: u16,
    /// CONNECT properties (5.0 only).
    pub props: Props,
    /// Client Identifier.
    pub client_id: String,
    /// Will message.
    pub will: Option<Will>,
    /// User Name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Vec<u8>>,
}

impl Connect {
    /// A valid CONNECT for `version` with clean start and a 60 s keepalive.
    pub fn new(version: Version, client_id: &str) -> Connect {
        Connect {
            protocol_name: "MQTT".into(),
            level: match version {
                Version::V311 => 4,
                Version::V5 => 5,
            },
            clean: true,
            reserved_flag: false,
            keepalive: 60,
            props: Props::new(),
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
        }
    }

    /// Encodes the packet.
    pub fn encode(&self) -> Vec<u8> {
        let v5 = self.level == 5;
        let mut b = Vec::new();
        put_str(&mut b, &self.protocol_name);
        b.push(self.level);
        let mut flags = 0u8;
        if self.reserved_flag {
            flags |= 0x01;
        }
        if self.clean {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | (w.qos << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        b.push(flags);
        b.extend_from_slice(&self.keepalive.to_be_bytes());
        if v5 {
            self.props.encode(&mut b);
        }
        put_str(&mut b, &self.client_id);
        if let Some(w) = &self.will {
            if v5 {
                w.props.encode(&mut b);
            }
            put_str(&mut b, &w.topic);
            put_bin(&mut b, &w.payload);
        }
        if let Some(u) = &self.username {
            put_str(&mut b, u);
        }
        if let Some(p) = &self.password {
            put_bin(&mut b, p);
        }
        frame(0x10, &b)
    }
}

/// A PUBLISH sent by the test client.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    /// Topic Name (may be empty with a Topic Alias in 5.0).
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// QoS (0..=3; 3 is malformed on purpose).
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// DUP flag.
    pub dup: bool,
    /// Packet Identifier (QoS > 0).
    pub pid: u16,
    /// Properties (5.0).
    pub props: Props,
}

impl Publish {
    /// A QoS 0 publish.
    pub fn new(topic: &str, payload: &[u8]) -> Publish {
        Publish {
            topic: topic.into(),
            payload: payload.to_vec(),
            ..Publish::default()
        }
    }
    /// Sets QoS and packet id (builder style).
    pub fn qos(mut self, qos: u8, pid: u16) -> Publish {
        self.qos = qos;
        self.pid = pid;
        self
    }
    /// Sets RETAIN (builder style).
    pub fn retain(mut self) -> Publish {
        self.retain = true;
        self
    }
    /// Sets properties (builder style).
    pub fn props(mut self, props: Props) -> Publish {
        self.props = props;
        self
    }

    /// Encodes the packet for `version`.
    pub fn encode(&self, version: Version) -> Vec<u8> {
        let mut b = Vec::new();
        put_str(&mut b, &self.topic);
        if self.qos > 0 {
            b.extend_from_slice(&self.pid.to_be_bytes());
        }
        if version == Version::V5 {
            self.props.encode(&mut b);
        }
        b.extend_from_slice(&self.payload);
        let first = 0x30 | (u8::from(self.dup) << 3) | (self.qos << 1) | u8::from(self.retain);
        frame(first, &b)
    }
}

/// SUBSCRIBE options byte: QoS, No Local, Retain As Published, Retain Handling.
pub fn sub_opts(qos: u8, no_local: bool, rap: bool, retain_handling: u8) -> u8 {
    qos | (u8::from(no_local) << 2) | (u8::from(rap) << 3) | (retain_handling << 4)
}

/// Encodes a SUBSCRIBE; `filters` are (filter, options byte).
pub fn subscribe(version: Version, pid: u16, filters: &[(&str, u8)], props: &Props) -> Vec<u8> {
    let mut b = pid.to_be_bytes().to_vec();
    if version == Version::V5 {
        props.encode(&mut b);
    }
    for (f, o) in filters {
        put_str(&mut b, f);
        b.push(*o);
    }
    frame(0x82, &b)
}

/// Encodes an UNSUBSCRIBE.
pub fn unsubscribe(version: Version, pid: u16, filters: &[&str]) -> Vec<u8> {
    let mut b = pid.to_be_bytes().to_vec();
    if version == Version::V5 {
        Props::new().encode(&mut b);
    }
    for f in filters {
        put_str(&mut b, f);
    }
    frame(0xA2, &b)
}

/// Encodes PUBACK (0x40), PUBREC (0x50), PUBREL (0x62) or PUBCOMP (0x70) with reason 0.
pub fn ack(first: u8, pid: u16) -> Vec<u8> {
    frame(first, &pid.to_be_bytes())
}

/// PINGREQ.
pub fn pingreq() -> Vec<u8> {
    vec![0xC0, 0x00]
}

/// DISCONNECT; for 5.0 with a reason code and properties.
pub fn disconnect(version: Version, reason: u8, props: &Props) -> Vec<u8> {
    match version {
        Version::V311 => vec![0xE0, 0x00],
        Version::V5 => {
            let mut b = vec![reason];
            props.encode(&mut b);
            frame(0xE0, &b)
        }
    }
}

/// AUTH (5.0).
pub fn auth(reason: u8, props: &Props) -> Vec<u8> {
    let mut b = vec![reason];
    props.encode(&mut b);
    frame(0xF0, &b)
}

/// A packet received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNACK.
    ConnAck {
        /// Session Present.
        session_present: bool,
        /// Return code (3.1.1) / reason code (5.0).
        code: u8,
        /// Properties (5.0).
        props: Props,
    },
    /// PUBLISH.
    Publish {
        /// Topic Name (empty when only a Topic Alias is sent).
        topic: String,
        /// Payload.
        payload: Vec<u8>,
        /// QoS.
        qos: u8,
        /// RETAIN flag.
        retain: bool,
        /// DUP flag.
        dup: bool,
        /// Packet Identifier (0 for QoS 0).
        pid: u16,
        /// Properties (5.0).
        props: Props,
    },
    /// PUBACK, PUBREC, PUBREL or PUBCOMP (`kind` = packet type 4..=7).
    Ack {
        /// Packet type number.
        kind: u8,
        /// Packet Identifier.
        pid: u16,
        /// Reason code (0 when absent).
        reason: u8,
    },
    /// SUBACK.
    SubAck {
        /// Packet Identifier.
        pid: u16,
        /// One return/reason code per filter.
        codes: Vec<u8>,
    },
    /// UNSUBACK.
    UnsubAck {
        /// Packet Identifier.
        pid: u16,
        /// Reason codes (5.0; empty in 3.1.1).
        codes: Vec<u8>,
    },
    /// PINGRESP.
    PingResp,
    /// DISCONNECT from the server.
    Disconnect {
        /// Reason code (0 when absent).
        reason: u8,
        /// Properties.
        props: Props,
    },
    /// AUTH.
    Auth {
        /// Reason code.
        reason: u8,
        /// Properties.
        props: Props,
    },
    /// Anything else (a server must never send these).
    Other {
        /// First byte of the fixed header.
        first: u8,
        /// Body.
        body: Vec<u8>,
    },
}

/// Why [`RawClient::recv`] returned no packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvError {
    /// The broker closed the connection (EOF or reset).
    Closed,
    /// Nothing arrived within the timeout.
    Timeout,
    /// The bytes received are not a valid packet.
    Malformed(String),
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b }
    }
    fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() < n {
            return Err(format!("need {n} bytes, have {}", self.b.len()));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn varint(&mut self) -> Result<u32, String> {
        let mut v = 0u32;
        for i in 0..4 {
            let b = self.u8()?;
            v |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 4 bytes".into())
    }
    fn binary(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u16()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.binary()?).map_err(|e| e.to_string())
    }
    fn rest(&mut self) -> Vec<u8> {
        let r = self.b.to_vec();
        self.b = &[];
        r
    }
}

/// Decodes one packet body (`first` = fixed header byte) sent by a server.
pub fn decode(version: Version, first: u8, body: &[u8]) -> Result<Packet, String> {
    let v5 = version == Version::V5;
    let mut r = Reader::new(body);
    let kind = first >> 4;
    let props = |r: &mut Reader<'_>| -> Result<Props, String> {
        if v5 && !r.is_empty() {
            Props::decode(r)
        } else {
            Ok(Props::new())
        }
    };
    Ok(match kind {
        2 => {
            let flags = r.u8()?;
            let code = r.u8()?;
            Packet::ConnAck {
                session_present: flags & 1 == 1,
                code,
                props: props(&mut r)?,
            }
        }
        3 => {
            let qos = (first >> 1) & 3;
            let topic = r.string()?;
            let pid = if qos > 0 { r.u16()? } else { 0 };
            let props = if v5 {
                Props::decode(&mut r)?
            } else {
                Props::new()
            };
            Packet::Publish {
                topic,
                payload: r.rest(),
                qos,
                retain: first & 1 == 1,
                dup: first & 8 == 8,
                pid,
                props,
            }
        }
        4..=7 => {
            let pid = r.u16()?;
            let reason = if r.is_empty() { 0 } else { r.u8()? };
            Packet::Ack { kind, pid, reason }
        }
        9 => {
            let pid = r.u16()?;
            if v5 {
                Props::decode(&mut r)?;
            }
            Packet::SubAck {
                pid,
                codes: r.rest(),
            }
        }
        11 => {
            let pid = r.u16()?;
            if v5 {
                Props::decode(&mut r)?;
            }
            Packet::UnsubAck {
                pid,
                codes: r.rest(),
            }
        }
        13 => Packet::PingResp,
        14 => {
            let reason = if r.is_empty() { 0 } else { r.u8()? };
            Packet::Disconnect {
                reason,
                props: props(&mut r)?,
            }
        }
        15 => {
            let reason = if r.is_empty() { 0 } else { r.u8()? };
            Packet::Auth {
                reason,
                props: props(&mut r)?,
            }
        }
        _ => Packet::Other {
            first,
            body: body.to_vec(),
        },
    })
}

/// A blocking TCP connection speaking hand-built MQTT. Every read is bounded.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Packets set aside by [`RawClient::recv_until`], returned first by later receives.
    pending: std::collections::VecDeque<Packet>,
    /// Version used to decode what the broker sends.
    pub version: Version,
}

impl RawClient {
    /// Opens a TCP connection (no MQTT traffic yet).
    pub fn open(addr: SocketAddr, version: Version) -> RawClient {
        let stream = TcpStream::connect_timeout(&addr, crate::WAIT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        stream
            .set_write_timeout(Some(crate::WAIT))
            .expect("set write timeout");
        RawClient {
            stream,
            buf: Vec::new(),
            pending: Default::default(),
            version,
        }
    }

    /// Opens a connection, sends `connect` and returns the CONNACK's (session present, code,
    /// properties). Panics if anything else arrives.
    pub fn connect(addr: SocketAddr, connect: &Connect) -> (RawClient, bool, u8, Props) {
        let version = if connect.level == 5 {
            Version::V5
        } else {
            Version::V311
        };
        let mut c = RawClient::open(addr, version);
        c.send(&connect.encode());
        match c.recv() {
            Ok(Packet::ConnAck {
                session_present,
                code,
                props,
            }) => (c, session_present, code, props),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects with a plain valid CONNECT and asserts success.
    pub fn connected(addr: SocketAddr, version: Version, client_id: &str) -> RawClient {
        let (c, _, code, _) = Self::connect(addr, &Connect::new(version, client_id));
        assert_eq!(code, 0, "CONNACK code for {client_id}");
        c
    }

    /// Writes raw bytes. A write error (the broker already closed) is ignored: the following
    /// read reports the close.
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Receives one packet within [`crate::WAIT`].
    pub fn recv(&mut self) -> Result<Packet, RecvError> {
        self.recv_within(crate::WAIT)
    }

    /// Receives one packet within `limit`.
    pub fn recv_within(&mut self, limit: Duration) -> Result<Packet, RecvError> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(p);
        }
        self.recv_wire(limit)
    }

    fn recv_wire(&mut self, limit: Duration) -> Result<Packet, RecvError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((first, body, used)) = split_frame(&self.buf)? {
                let p = decode(self.version, first, &body).map_err(RecvError::Malformed)?;
                self.buf.drain(..used);
                return Ok(p);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvError::Timeout);
            }
            self.stream
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .expect("set read timeout");
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(RecvError::Timeout);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(RecvError::Closed),
            }
        }
    }

    /// Receives until a packet matches `f`, within [`crate::WAIT`]. Packets that do not match
    /// are set aside and returned, in order, by the following receives.
    pub fn recv_until(&mut self, mut f: impl FnMut(&Packet) -> bool) -> Packet {
        if let Some(i) = self.pending.iter().position(&mut f) {
            return self.pending.remove(i).expect("index from position");
        }
        let deadline = Instant::now() + crate::WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_wire(left) {
                Ok(p) if f(&p) => return p,
                Ok(p) => self.pending.push_back(p),
                Err(e) => panic!("waiting for a packet: {e:?}; set aside: {:?}", self.pending),
            }
        }
    }

    /// Receives the next PUBLISH (answering nothing), skipping PINGRESPs.
    pub fn recv_publish(&mut self) -> Packet {
        self.recv_until(|p| matches!(p, Packet::Publish { .. }))
    }

    /// Waits (bounded by `limit`) until the broker closes the connection; returns the packets
    /// received before the close. Panics if it is still open after `limit`.
    pub fn expect_closed_within(&mut self, limit: Duration) -> Vec<Packet> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left) {
                Ok(p) => seen.push(p),
                Err(RecvError::Closed) => return seen,
                // Garbage after a close decision still means we must see the close.
                Err(RecvError::Malformed(m)) => {
                    panic!("broker sent malformed bytes: {m}; packets before: {seen:?}")
                }
                Err(RecvError::Timeout) => panic!(
                    "connection still open after {limit:?}; packets received meanwhile: {seen:?}"
                ),
            }
        }
    }

    /// [`Self::expect_closed_within`] with [`crate::WAIT`].
    pub fn expect_closed(&mut self) -> Vec<Packet> {
        self.expect_closed_within(crate::WAIT)
    }

    /// Expects the broker to send DISCONNECT with `reason` (5.0) and close.
    pub fn expect_disconnect(&mut self, reason: u8) {
        let seen = self.expect_closed();
        let got: Vec<u8> = seen
            .iter()
            .filter_map(|p| match p {
                Packet::Disconnect { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            vec![reason],
            "expected exactly one DISCONNECT 0x{reason:02X} before close; got {seen:?}"
        );
    }

    /// Subscribes and returns the SUBACK codes.
    pub fn subscribe(&mut self, pid: u16, filters: &[(&str, u8)], props: &Props) -> Vec<u8> {
        let v = self.version;
        self.send(&subscribe(v, pid, filters, props));
        match self.recv_until(|p| matches!(p, Packet::SubAck { .. })) {
            Packet::SubAck { pid: got, codes } => {
                assert_eq!(got, pid, "SUBACK packet id [MQTT-3.8.4-2]");
                codes
            }
            _ => unreachable!("recv_until returned a SUBACK"),
        }
    }

    /// Publishes and completes the QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP); returns the
    /// reason code of the PUBACK / PUBREC.
    pub fn publish(&mut self, p: &Publish) -> u8 {
        let v = self.version;
        self.send(&p.encode(v));
        match p.qos {
            1 => match self.recv_until(|x| matches!(x, Packet::Ack { kind: 4, .. })) {
                Packet::Ack { pid, reason, .. } => {
                    assert_eq!(pid, p.pid, "PUBACK packet id");
                    reason
                }
                _ => unreachable!("a PUBACK"),
            },
            2 => {
                let reason = match self.recv_until(|x| matches!(x, Packet::Ack { kind: 5, .. })) {
                    Packet::Ack { pid, reason, .. } => {
                        assert_eq!(pid, p.pid, "PUBREC packet id");
                        reason
                    }
                    _ => unreachable!("a PUBREC"),
                };
                self.send(&ack(0x62, p.pid));
                self.recv_until(|x| matches!(x, Packet::Ack { kind: 7, .. }));
                reason
            }
            _ => 0,
        }
    }

    /// Acknowledges a received QoS 1/2 PUBLISH (PUBACK, or PUBREC then PUBREL/PUBCOMP).
    pub fn ack_publish(&mut self, p: &Packet) {
        if let Packet::Publish { qos, pid, .. } = p {
            match qos {
                1 => self.send(&ack(0x40, *pid)),
                2 => {
                    self.send(&ack(0x50, *pid));
                    self.recv_until(|x| matches!(x, Packet::Ack { kind: 6, .. }));
                    self.send(&ack(0x70, *pid));
                }
                _ => {}
            }
        }
    }

    /// Shuts the socket down without DISCONNECT (an abnormal close for the broker).
    pub fn drop_abruptly(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// The underlying stream (e.g. to write a partial packet).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

fn split_frame(buf: &[u8]) -> Result<Option<(u8, Vec<u8>, usize)>, RecvError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut len = 0usize;
    let mut i = 1;
    loop {
        if i > 4 {
            return Err(RecvError::Malformed("remaining length over 4 bytes".into()));
        }
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7F) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    Ok(Some((buf[0], buf[i..i + len].to_vec(), i + len)))
}
