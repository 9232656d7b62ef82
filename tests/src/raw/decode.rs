//! Decoding what the broker sends.

use super::Version;
use super::props::Props;

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

pub(crate) struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Reader { b }
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() < n {
            return Err(format!("need {n} bytes, have {}", self.b.len()));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn varint(&mut self) -> Result<u32, String> {
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
    pub(crate) fn binary(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u16()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    pub(crate) fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.binary()?).map_err(|e| e.to_string())
    }
    pub(crate) fn rest(&mut self) -> Vec<u8> {
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

/// The fields of a PUBLISH: (topic, payload, QoS, retain, properties). Panics (failing the
/// test) on any other packet.
pub fn publish_parts(p: &Packet) -> (&str, &[u8], u8, bool, &Props) {
    match p {
        Packet::Publish {
            topic,
            payload,
            qos,
            retain,
            props,
            ..
        } => (topic, payload, *qos, *retain, props),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}
