//! Packets the test client sends, built field by field (including invalid ones on purpose).

use super::Version;
use super::props::Props;

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
