//! MQTT 5 properties: identifiers, values, encoding and decoding.

use super::decode::Reader;
use super::encode::{put_bin, put_str, put_varint};

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
    /// Retain Available (byte).
    pub const RETAIN_AVAILABLE: u8 = 0x25;
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

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Props, String> {
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
