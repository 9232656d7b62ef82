//! Conversions between halyard-session types and halyard-store records.
//!
//! Stored deliveries (offline queue, outgoing in-flight) keep the delivery's QoS and RETAIN
//! in the record's fields, and the subscription identifiers, the message's own QoS/RETAIN
//! (when they differ) and the resend order in the properties [`Blob`]. Expiry times are
//! wall-clock Unix milliseconds, converted with a [`WallClock`].

use std::sync::Arc;
use std::time::Instant;

use halyard_codec::{QoS, RetainHandling, SubscriptionOptions};
use halyard_session::{
    ClientId, Delivery, Message, MessageParts, OutgoingParts, OutgoingStage, Session, SessionParts,
    Subscription, WallClock, Will,
};
use halyard_store::{
    InflightEntry, InflightStage, SessionRecord, StoredMessage, SubscriptionRecord, WillRecord,
};

use super::DurableError;
use super::blob::Blob;

/// MQTT protocol level of a 3.1.1 connection, as stored in [`SessionRecord::protocol_version`].
pub const PROTOCOL_V311: u8 = 4;
/// MQTT protocol level of a 5.0 connection.
pub const PROTOCOL_V5: u8 = 5;

/// The SUBSCRIBE options byte as on the wire (MQTT 5.0 §3.8.3.1): QoS in bits 0-1, No Local
/// bit 2, Retain As Published bit 3, Retain Handling bits 4-5.
pub fn options_byte(o: &SubscriptionOptions) -> u8 {
    o.qos.as_u8()
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling as u8) << 4)
}

/// Inverse of [`options_byte`]; `None` for a QoS of 3 or a Retain Handling of 3.
pub fn options_from_byte(b: u8) -> Option<SubscriptionOptions> {
    Some(SubscriptionOptions {
        qos: QoS::from_u8(b & 0b11)?,
        no_local: b & 0b100 != 0,
        retain_as_published: b & 0b1000 != 0,
        retain_handling: RetainHandling::from_u8((b >> 4) & 0b11)?,
    })
}

/// A message as stored (retained messages, wills): its own QoS and RETAIN.
pub fn message_to_stored(m: &Message, clock: &WallClock) -> StoredMessage {
    let p = m.to_parts(clock);
    let blob = Blob {
        properties: p.properties,
        ..Blob::default()
    };
    StoredMessage {
        topic: p.topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        properties: blob.encode(),
        expires_at_unix_ms: p.expires_at_unix_ms,
        publisher_id: p.publisher,
    }
}

/// Inverse of [`message_to_stored`].
pub fn stored_to_message(s: StoredMessage, clock: &WallClock) -> Result<Message, DurableError> {
    let blob = Blob::decode(&s.properties)?;
    let (qos, retain) = blob.published.unwrap_or((s.qos, s.retain));
    let parts = MessageParts {
        topic: s.topic,
        payload: s.payload,
        qos,
        retain,
        properties: blob.properties,
        expires_at_unix_ms: s.expires_at_unix_ms,
        publisher: s.publisher_id,
    };
    Ok(Message::from_parts(parts, clock)?)
}

/// A delivery as stored (offline queue, in-flight), with an optional resend order.
pub fn delivery_to_stored(d: &Delivery, order: Option<u64>, clock: &WallClock) -> StoredMessage {
    let p = d.message.to_parts(clock);
    let published = (p.qos != d.qos.as_u8() || p.retain != d.retain).then_some((p.qos, p.retain));
    let blob = Blob {
        properties: p.properties,
        subscription_ids: d.subscription_ids.clone(),
        published,
        order,
    };
    StoredMessage {
        topic: p.topic,
        payload: p.payload,
        qos: d.qos.as_u8(),
        retain: d.retain,
        properties: blob.encode(),
        expires_at_unix_ms: p.expires_at_unix_ms,
        publisher_id: p.publisher,
    }
}

/// Inverse of [`delivery_to_stored`]: the delivery and its resend order.
pub fn stored_to_delivery(
    s: StoredMessage,
    clock: &WallClock,
) -> Result<(Delivery, Option<u64>), DurableError> {
    let blob = Blob::decode(&s.properties)?;
    let qos = QoS::from_u8(s.qos).ok_or(halyard_session::PartsError::InvalidQos(s.qos))?;
    let (mqos, mretain) = blob.published.unwrap_or((s.qos, s.retain));
    let parts = MessageParts {
        topic: s.topic,
        payload: s.payload,
        qos: mqos,
        retain: mretain,
        properties: blob.properties,
        expires_at_unix_ms: s.expires_at_unix_ms,
        publisher: s.publisher_id,
    };
    let message = Message::from_parts(parts, clock)?;
    Ok((
        Delivery {
            message: Arc::new(message),
            qos,
            retain: s.retain,
            subscription_ids: blob.subscription_ids,
            packet_id: None,
        },
        blob.order,
    ))
}

fn stage_to_store(s: OutgoingStage) -> InflightStage {
    match s {
        OutgoingStage::AwaitingPuback => InflightStage::AwaitingPuback,
        OutgoingStage::AwaitingPubrec => InflightStage::AwaitingPubrec,
        OutgoingStage::AwaitingPubcomp => InflightStage::AwaitingPubcomp,
    }
}

fn stage_from_store(s: InflightStage) -> OutgoingStage {
    match s {
        InflightStage::AwaitingPuback => OutgoingStage::AwaitingPuback,
        InflightStage::AwaitingPubrec => OutgoingStage::AwaitingPubrec,
        InflightStage::AwaitingPubcomp => OutgoingStage::AwaitingPubcomp,
    }
}

/// An outgoing in-flight message as a store entry.
pub fn outgoing_to_entry(o: &OutgoingParts, clock: &WallClock) -> InflightEntry {
    InflightEntry {
        packet_id: o.packet_id,
        stage: stage_to_store(o.stage),
        message: delivery_to_stored(&o.delivery, Some(o.order), clock),
    }
}

/// A store entry as an outgoing in-flight message. It is marked as sent (a resend carries
/// DUP=1): the server writes in-flight state before transmitting, so the client may have
/// seen it.
pub fn entry_to_outgoing(
    e: InflightEntry,
    clock: &WallClock,
) -> Result<OutgoingParts, DurableError> {
    let packet_id = e.packet_id;
    let (delivery, order) = stored_to_delivery(e.message, clock)?;
    Ok(OutgoingParts {
        packet_id,
        stage: stage_from_store(e.stage),
        delivery,
        ever_sent: true,
        // Entries without an order keep packet-id order (the store lists them so).
        order: order.unwrap_or(u64::from(packet_id)),
    })
}

/// The session's record (everything except its offline queue, stored apart).
/// `disconnected_at`: `None` while a connection owns the session.
pub fn session_to_record(
    session: &Session,
    protocol_version: u8,
    disconnected_at: Option<Instant>,
    clock: &WallClock,
) -> SessionRecord {
    let parts = session.to_parts();
    parts_to_record(&parts, protocol_version, disconnected_at, clock)
}

/// As [`session_to_record`], from parts already taken.
pub fn parts_to_record(
    parts: &SessionParts,
    protocol_version: u8,
    disconnected_at: Option<Instant>,
    clock: &WallClock,
) -> SessionRecord {
    SessionRecord {
        client_id: parts.client_id.to_string(),
        session_expiry_interval_secs: parts.expiry_interval,
        disconnected_at_unix_ms: disconnected_at.map(|t| clock.unix_ms(t)),
        protocol_version,
        subscriptions: parts
            .subscriptions
            .iter()
            .map(|(filter, s)| SubscriptionRecord {
                filter: filter.clone(),
                options: options_byte(&s.options),
                subscription_id: s.subscription_id,
            })
            .collect(),
        inflight: parts
            .outgoing
            .iter()
            .map(|o| outgoing_to_entry(o, clock))
            .collect(),
        incoming_qos2: parts.incoming_qos2.clone(),
    }
}

/// Session parts from a record and its queue (deliveries, front first). The next packet
/// identifier continues after the highest restored one.
pub fn record_to_parts(
    record: SessionRecord,
    queued: Vec<Delivery>,
    clock: &WallClock,
) -> Result<SessionParts, DurableError> {
    let mut subscriptions = Vec::with_capacity(record.subscriptions.len());
    for s in record.subscriptions {
        let options = options_from_byte(s.options).ok_or(DurableError::Options(s.options))?;
        subscriptions.push((
            s.filter,
            Subscription {
                options,
                subscription_id: s.subscription_id,
            },
        ));
    }
    let mut outgoing = Vec::with_capacity(record.inflight.len());
    for e in record.inflight {
        outgoing.push(entry_to_outgoing(e, clock)?);
    }
    let next_packet_id = outgoing
        .iter()
        .max_by_key(|o| o.order)
        .map_or(1, |o| o.packet_id.wrapping_add(1).max(1));
    Ok(SessionParts {
        client_id: ClientId::from(record.client_id),
        expiry_interval: record.session_expiry_interval_secs,
        subscriptions,
        outgoing,
        incoming_qos2: record.incoming_qos2,
        queued,
        next_packet_id,
    })
}

/// A pending will as stored: the message it publishes at `fire_at` (its Message Expiry
/// Interval counted from then), and when.
pub fn will_to_record(
    will: &Will,
    client_id: &ClientId,
    fire_at: Instant,
    clock: &WallClock,
) -> WillRecord {
    let message = will.to_message(fire_at, Some(client_id.clone()));
    WillRecord {
        message: message_to_stored(&message, clock),
        fire_at_unix_ms: clock.unix_ms(fire_at),
    }
}

/// Inverse of [`will_to_record`]: the will and when to publish it (in the past when its
/// time passed during downtime: publish at once). The delay is what remains of it.
pub fn record_to_will(r: WillRecord, clock: &WallClock) -> Result<(Will, Instant), DurableError> {
    let fire_at = clock.instant(r.fire_at_unix_ms);
    let expiry_ms = r.message.expires_at_unix_ms;
    let m = stored_to_message(r.message, clock)?;
    let message_expiry_interval = expiry_ms.map(|e| {
        let ms = e.saturating_sub(r.fire_at_unix_ms);
        u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
    });
    let delay_ms = r.fire_at_unix_ms.saturating_sub(clock.now_unix_ms);
    Ok((
        Will {
            topic: m.topic,
            payload: m.payload,
            qos: m.qos,
            retain: m.retain,
            properties: m.properties,
            message_expiry_interval,
            delay_interval: u32::try_from(delay_ms.div_ceil(1000)).unwrap_or(u32::MAX),
        },
        fire_at,
    ))
}
