//! The bytes of one forwarded message on a node-to-node link: which subscribers the
//! receiving node serves (its ordinary ones or not, and the shared groups picked for it) and
//! the message itself, in the store's record form (properties in the store's blob encoding,
//! expiry as wall-clock Unix milliseconds). All integers big-endian; every length is checked
//! against the remaining bytes, so a hostile frame is an error, never a panic.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use halyard_cluster::SharedPick;
use halyard_session::{Message, WallClock};

use crate::durable::convert::{message_to_stored, stored_to_message};

/// Format version written first.
const VERSION: u8 = 1;

/// A decoded forwarded message.
#[derive(Debug)]
pub struct Forwarded {
    /// Deliver to the ordinary (non-shared) matching subscribers.
    pub ordinary: bool,
    /// Deliver to one local member of each of these shared groups.
    pub groups: Vec<SharedPick>,
    /// The message.
    pub message: Arc<Message>,
}

/// Why a forwarded message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes end early, carry an unknown version, or a field is malformed.
    #[error("malformed forwarded message: {0}")]
    Malformed(&'static str),
    /// The message fields are invalid (e.g. a bad topic or property blob).
    #[error("invalid forwarded message: {0}")]
    Invalid(String),
}

/// The wall clock paired with the monotonic clock now.
pub fn wall_clock() -> WallClock {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    WallClock::new(Instant::now(), ms)
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    // Lengths above u32::MAX cannot occur: MQTT packets are at most 256 MiB.
    out.put_u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.put_slice(b);
}

/// Encodes `message` for a node that serves `ordinary` subscribers and `groups`.
pub fn encode(
    message: &Message,
    ordinary: bool,
    groups: &[SharedPick],
    clock: &WallClock,
) -> Bytes {
    let s = message_to_stored(message, clock);
    let mut out = BytesMut::with_capacity(64 + s.topic.len() + s.payload.len());
    out.put_u8(VERSION);
    out.put_u8(u8::from(ordinary) | (u8::from(s.retain) << 1));
    out.put_u8(s.qos);
    out.put_u32(u32::try_from(groups.len()).unwrap_or(u32::MAX));
    for g in groups {
        put_bytes(&mut out, g.group.as_bytes());
        put_bytes(&mut out, g.filter.as_bytes());
    }
    put_bytes(&mut out, s.topic.as_bytes());
    put_bytes(&mut out, &s.properties);
    match s.expires_at_unix_ms {
        Some(ms) => {
            out.put_u8(1);
            out.put_u64(ms);
        }
        None => out.put_u8(0),
    }
    match &s.publisher_id {
        Some(p) => {
            out.put_u8(1);
            put_bytes(&mut out, p.as_bytes());
        }
        None => out.put_u8(0),
    }
    put_bytes(&mut out, &s.payload);
    out.freeze()
}

fn take_u8(b: &mut Bytes) -> Result<u8, WireError> {
    if b.remaining() < 1 {
        return Err(WireError::Malformed("truncated"));
    }
    Ok(b.get_u8())
}

fn take_bytes(b: &mut Bytes) -> Result<Bytes, WireError> {
    if b.remaining() < 4 {
        return Err(WireError::Malformed("truncated length"));
    }
    let n = b.get_u32() as usize;
    if b.remaining() < n {
        return Err(WireError::Malformed("length beyond the end"));
    }
    Ok(b.split_to(n))
}

fn take_string(b: &mut Bytes) -> Result<String, WireError> {
    String::from_utf8(take_bytes(b)?.to_vec()).map_err(|_| WireError::Malformed("not UTF-8"))
}

/// Decodes what [`encode`] wrote.
pub fn decode(mut b: Bytes, clock: &WallClock) -> Result<Forwarded, WireError> {
    if take_u8(&mut b)? != VERSION {
        return Err(WireError::Malformed("unknown version"));
    }
    let flags = take_u8(&mut b)?;
    let qos = take_u8(&mut b)?;
    if b.remaining() < 4 {
        return Err(WireError::Malformed("truncated"));
    }
    let n = b.get_u32() as usize;
    // Each group takes at least 8 bytes: bound the allocation by what is there.
    if n > b.remaining() / 8 {
        return Err(WireError::Malformed("too many groups"));
    }
    let mut groups = Vec::with_capacity(n);
    for _ in 0..n {
        let group = take_string(&mut b)?;
        let filter = take_string(&mut b)?;
        groups.push(SharedPick { group, filter });
    }
    let topic = take_string(&mut b)?;
    let properties = take_bytes(&mut b)?;
    let expires_at_unix_ms = match take_u8(&mut b)? {
        0 => None,
        _ if b.remaining() >= 8 => Some(b.get_u64()),
        _ => return Err(WireError::Malformed("truncated expiry")),
    };
    let publisher_id = match take_u8(&mut b)? {
        0 => None,
        _ => Some(take_string(&mut b)?),
    };
    let payload = take_bytes(&mut b)?;
    let stored = halyard_store::StoredMessage {
        topic,
        payload,
        qos,
        retain: flags & 2 != 0,
        properties,
        expires_at_unix_ms,
        publisher_id,
    };
    let message =
        stored_to_message(stored, clock).map_err(|e| WireError::Invalid(e.to_string()))?;
    Ok(Forwarded {
        ordinary: flags & 1 != 0,
        groups,
        message: Arc::new(message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            qos: halyard_codec::QoS::AtLeastOnce,
            retain: true,
            properties: Default::default(),
            expires_at: None,
            publisher: Some("pub-1".into()),
        }
    }

    #[test]
    fn round_trip_keeps_message_and_scope() {
        let clock = wall_clock();
        let g = vec![SharedPick {
            group: "g".into(),
            filter: "a/+".into(),
        }];
        let bytes = encode(&sample(), true, &g, &clock);
        let f = decode(bytes, &clock).unwrap();
        assert!(f.ordinary);
        assert_eq!(f.groups, g);
        assert_eq!(*f.message, sample());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let clock = wall_clock();
        let bytes = encode(&sample(), false, &[], &clock);
        for n in 0..bytes.len() {
            assert!(decode(bytes.slice(..n), &clock).is_err(), "prefix {n}");
        }
    }
}
