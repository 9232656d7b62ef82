//! The properties blob: `StoredMessage::properties` as the server encodes it.
//!
//! Format (version 1): empty = no properties and no extras (the common case costs nothing);
//! otherwise a version byte [`BLOB_VERSION`] followed by records `tag, value`, in any order:
//!
//! | tag  | value                                   | meaning                                  |
//! |------|-----------------------------------------|------------------------------------------|
//! | 0x01 | u8 (0 or 1)                             | Payload Format Indicator                 |
//! | 0x03 | string                                  | Content Type                             |
//! | 0x08 | string                                  | Response Topic                           |
//! | 0x09 | bytes                                   | Correlation Data                         |
//! | 0x26 | string, string                          | one User Property (order kept)           |
//! | 0x0B | u32 BE                                  | one Subscription Identifier (delivery)   |
//! | 0xF0 | u8: QoS (bits 0-1), RETAIN (bit 2)      | the message as published, when a stored delivery differs |
//! | 0xF1 | u64 BE                                  | outgoing in-flight resend order          |
//!
//! `string`/`bytes` = u32 BE length then the bytes (strings UTF-8). Property tags are the
//! MQTT 5 property identifiers; 0xF0.. are Halyard's. A decoder refuses unknown versions and
//! tags rather than guess; a new field means a new version.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use halyard_codec::MqttString;
use halyard_session::MessageProperties;
use smallvec::SmallVec;

/// The version byte written by this build.
pub const BLOB_VERSION: u8 = 1;

const PFI: u8 = 0x01;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION: u8 = 0x09;
const USER_PROPERTY: u8 = 0x26;
const SUBSCRIPTION_ID: u8 = 0x0B;
const PUBLISHED: u8 = 0xF0;
const ORDER: u8 = 0xF1;

/// Everything the blob holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob {
    /// The message's forwarded properties.
    pub properties: MessageProperties,
    /// Subscription identifiers of a stored delivery.
    pub subscription_ids: SmallVec<[u32; 2]>,
    /// QoS and RETAIN as published, when they differ from the stored delivery's.
    pub published: Option<(u8, bool)>,
    /// Resend order of an outgoing in-flight entry.
    pub order: Option<u64>,
}

/// Why a blob could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// The version byte is not one this build reads.
    #[error("properties blob version {0} is not supported (this build reads {BLOB_VERSION})")]
    Version(u8),
    /// A record tag this version does not define.
    #[error("unknown properties blob tag {0:#04x}")]
    UnknownTag(u8),
    /// The blob ends inside a record.
    #[error("properties blob truncated")]
    Truncated,
    /// A string record is not UTF-8.
    #[error("properties blob string is not UTF-8")]
    Utf8,
}

impl Blob {
    /// True when encoding gives an empty blob.
    pub fn is_empty(&self) -> bool {
        *self == Blob::default()
    }

    /// Encodes (empty when there is nothing to store).
    pub fn encode(&self) -> Bytes {
        if self.is_empty() {
            return Bytes::new();
        }
        let mut b = BytesMut::with_capacity(64);
        b.put_u8(BLOB_VERSION);
        let p = &self.properties;
        if let Some(v) = p.payload_format_indicator {
            b.put_u8(PFI);
            b.put_u8(u8::from(v));
        }
        if let Some(s) = &p.content_type {
            b.put_u8(CONTENT_TYPE);
            put_bytes(&mut b, s.as_bytes());
        }
        if let Some(s) = &p.response_topic {
            b.put_u8(RESPONSE_TOPIC);
            put_bytes(&mut b, s.as_bytes());
        }
        if let Some(d) = &p.correlation_data {
            b.put_u8(CORRELATION);
            put_bytes(&mut b, d);
        }
        for (k, v) in &p.user_properties {
            b.put_u8(USER_PROPERTY);
            put_bytes(&mut b, k.as_bytes());
            put_bytes(&mut b, v.as_bytes());
        }
        for id in &self.subscription_ids {
            b.put_u8(SUBSCRIPTION_ID);
            b.put_u32(*id);
        }
        if let Some((qos, retain)) = self.published {
            b.put_u8(PUBLISHED);
            b.put_u8((qos & 0b11) | (u8::from(retain) << 2));
        }
        if let Some(order) = self.order {
            b.put_u8(ORDER);
            b.put_u64(order);
        }
        b.freeze()
    }

    /// Decodes a blob written by [`Blob::encode`].
    pub fn decode(blob: &Bytes) -> Result<Blob, BlobError> {
        let mut out = Blob::default();
        if blob.is_empty() {
            return Ok(out);
        }
        let mut r = blob.clone();
        let version = r.get_u8();
        if version != BLOB_VERSION {
            return Err(BlobError::Version(version));
        }
        while r.has_remaining() {
            let tag = r.get_u8();
            match tag {
                PFI => out.properties.payload_format_indicator = Some(get_u8(&mut r)? != 0),
                CONTENT_TYPE => out.properties.content_type = Some(get_string(&mut r)?),
                RESPONSE_TOPIC => out.properties.response_topic = Some(get_string(&mut r)?),
                CORRELATION => out.properties.correlation_data = Some(get_bytes(&mut r)?),
                USER_PROPERTY => {
                    let k = get_string(&mut r)?;
                    let v = get_string(&mut r)?;
                    out.properties.user_properties.push((k, v));
                }
                SUBSCRIPTION_ID => {
                    if r.remaining() < 4 {
                        return Err(BlobError::Truncated);
                    }
                    out.subscription_ids.push(r.get_u32());
                }
                PUBLISHED => {
                    let v = get_u8(&mut r)?;
                    out.published = Some((v & 0b11, v & 0b100 != 0));
                }
                ORDER => {
                    if r.remaining() < 8 {
                        return Err(BlobError::Truncated);
                    }
                    out.order = Some(r.get_u64());
                }
                other => return Err(BlobError::UnknownTag(other)),
            }
        }
        Ok(out)
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    // MQTT strings and binary data are at most 65,535 bytes, far below u32::MAX.
    b.put_u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
    b.put_slice(v);
}

fn get_u8(r: &mut Bytes) -> Result<u8, BlobError> {
    if r.has_remaining() {
        Ok(r.get_u8())
    } else {
        Err(BlobError::Truncated)
    }
}

fn get_bytes(r: &mut Bytes) -> Result<Bytes, BlobError> {
    if r.remaining() < 4 {
        return Err(BlobError::Truncated);
    }
    let n = r.get_u32() as usize;
    if r.remaining() < n {
        return Err(BlobError::Truncated);
    }
    Ok(r.split_to(n))
}

fn get_string(r: &mut Bytes) -> Result<MqttString, BlobError> {
    MqttString::from_utf8(get_bytes(r)?).map_err(|_| BlobError::Utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Blob {
        Blob {
            properties: MessageProperties {
                payload_format_indicator: Some(false),
                content_type: Some("application/json".into()),
                response_topic: Some("reply/to".into()),
                correlation_data: Some(Bytes::from_static(b"\x00\xff\x10")),
                user_properties: vec![
                    ("b".into(), "2".into()),
                    ("a".into(), "1".into()),
                    ("b".into(), "3".into()),
                ],
            },
            subscription_ids: SmallVec::from_slice(&[1, 268_435_455]),
            published: Some((2, true)),
            order: Some(u64::MAX - 1),
        }
    }

    #[test]
    fn empty_blob_for_no_properties() {
        assert!(Blob::default().encode().is_empty());
        assert_eq!(Blob::decode(&Bytes::new()).unwrap(), Blob::default());
    }

    #[test]
    fn round_trip_keeps_everything_and_user_property_order() {
        let b = full();
        let bytes = b.encode();
        assert_eq!(bytes[0], BLOB_VERSION);
        assert_eq!(Blob::decode(&bytes).unwrap(), b);
        let only_pfi = Blob {
            properties: MessageProperties {
                payload_format_indicator: Some(true),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(only_pfi.encode().as_ref(), [BLOB_VERSION, PFI, 1]);
        assert_eq!(Blob::decode(&only_pfi.encode()).unwrap(), only_pfi);
    }

    #[test]
    fn format_is_stable() {
        // Version 1 bytes of a small blob: changing them breaks existing stores.
        let b = Blob {
            properties: MessageProperties {
                content_type: Some("t".into()),
                ..Default::default()
            },
            subscription_ids: SmallVec::from_slice(&[5]),
            published: Some((1, false)),
            order: Some(3),
        };
        assert_eq!(
            b.encode().as_ref(),
            [
                1, 0x03, 0, 0, 0, 1, b't', 0x0B, 0, 0, 0, 5, 0xF0, 1, 0xF1, 0, 0, 0, 0, 0, 0, 0, 3
            ]
        );
    }

    #[test]
    fn damaged_blobs_are_refused() {
        let bytes = full().encode();
        // A cut inside a record is an error; a cut between records loses the rest, so it
        // never decodes to the whole blob. Either way no panic.
        for cut in 1..bytes.len() {
            assert_ne!(Blob::decode(&bytes.slice(..cut)), Ok(full()), "cut {cut}");
        }
        assert_eq!(
            Blob::decode(&bytes.slice(..bytes.len() - 1)),
            Err(BlobError::Truncated)
        );
        assert_eq!(
            Blob::decode(&Bytes::from_static(&[2, 1, 1])),
            Err(BlobError::Version(2))
        );
        assert_eq!(
            Blob::decode(&Bytes::from_static(&[1, 0x77])),
            Err(BlobError::UnknownTag(0x77))
        );
        assert_eq!(
            Blob::decode(&Bytes::from_static(&[1, 0x03, 0, 0, 0, 1, 0xff])),
            Err(BlobError::Utf8)
        );
    }
}
