//! proptest strategies producing arbitrary *valid* packets for a protocol version: what the
//! encoder accepts and the decoder must return unchanged.

use bytes::Bytes;
use halyard_codec::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Union};

pub fn string() -> BoxedStrategy<MqttString> {
    "[^\u{0}]{0,12}".prop_map(MqttString::from).boxed()
}

fn ostring() -> BoxedStrategy<Option<MqttString>> {
    option::of(string()).boxed()
}

fn binary() -> BoxedStrategy<Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from).boxed()
}

fn obinary() -> BoxedStrategy<Option<Bytes>> {
    option::of(binary()).boxed()
}

fn user() -> BoxedStrategy<UserProperties> {
    vec((string(), string()), 0..3).boxed()
}

fn flag() -> BoxedStrategy<Option<bool>> {
    option::of(any::<bool>()).boxed()
}

fn qos() -> BoxedStrategy<QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
    .boxed()
}

fn nonzero16() -> BoxedStrategy<u16> {
    (1..=u16::MAX).boxed()
}

fn sub_id() -> BoxedStrategy<u32> {
    prop_oneof![1..=200u32, 1..=MAX_VARIABLE_BYTE_INTEGER].boxed()
}

/// Reason codes MQTT 5.0 allows in a packet type.
pub fn code(t: PacketType) -> BoxedStrategy<ReasonCode> {
    let allowed: Vec<ReasonCode> = (0..=255u8)
        .map(ReasonCode)
        .filter(|c| c.allowed_in(t))
        .collect();
    proptest::sample::select(allowed).boxed()
}

fn connect_props() -> BoxedStrategy<ConnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(nonzero16()),
        option::of(1..=u32::MAX),
        option::of(any::<u16>()),
        flag(),
        flag(),
        ostring(),
        obinary(),
        user(),
    )
        .prop_map(
            |(sei, rm, mps, tam, rri, rpi, am, ad, up)| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                authentication_method: am,
                authentication_data: ad,
                user_properties: up,
            },
        )
        .boxed()
}

fn will_props() -> BoxedStrategy<WillProperties> {
    (
        option::of(any::<u32>()),
        flag(),
        option::of(any::<u32>()),
        ostring(),
        ostring(),
        obinary(),
        user(),
    )
        .prop_map(|(wdi, pfi, mei, ct, rt, cd, up)| WillProperties {
            will_delay_interval: wdi,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
        })
        .boxed()
}

pub fn connect() -> BoxedStrategy<Connect> {
    let version = prop_oneof![Just(ProtocolVersion::V311), Just(ProtocolVersion::V5)];
    (
        version,
        any::<bool>(),
        any::<u16>(),
        string(),
        option::of((string(), binary(), qos(), any::<bool>(), will_props())),
        ostring(),
        obinary(),
        connect_props(),
    )
        .prop_map(
            |(v, clean_start, keep_alive, client_id, will, username, password, props)| {
                let v5 = v == ProtocolVersion::V5;
                Connect {
                    protocol_version: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will: will.map(|(topic, payload, qos, retain, p)| Will {
                        topic,
                        payload,
                        qos,
                        retain,
                        properties: if v5 { p } else { WillProperties::default() },
                    }),
                    // [MQTT-3.1.2-22]: 3.1.1 has no password without a user name.
                    password: if v5 || username.is_some() {
                        password
                    } else {
                        None
                    },
                    username,
                    properties: if v5 {
                        props
                    } else {
                        ConnectProperties::default()
                    },
                }
            },
        )
        .boxed()
}

fn connack_props() -> BoxedStrategy<ConnAckProperties> {
    (
        (
            option::of(any::<u32>()),
            option::of(nonzero16()),
            option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]),
            flag(),
            option::of(1..=u32::MAX),
            ostring(),
            option::of(any::<u16>()),
            ostring(),
        ),
        (
            flag(),
            flag(),
            flag(),
            option::of(any::<u16>()),
            ostring(),
            ostring(),
            ostring(),
            obinary(),
            user(),
        ),
    )
        .prop_map(
            |((sei, rm, mq, ra, mps, aci, tam, rs), (wsa, sia, ssa, ska, ri, sr, am, ad, up))| {
                ConnAckProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                    user_properties: up,
                }
            },
        )
        .boxed()
}

fn connack(v5: bool) -> BoxedStrategy<ConnAck> {
    if v5 {
        (any::<bool>(), code(PacketType::ConnAck), connack_props())
            .prop_map(|(session_present, reason_code, properties)| ConnAck {
                session_present,
                reason_code,
                properties,
            })
            .boxed()
    } else {
        (any::<bool>(), 0..=5u8)
            .prop_map(|(session_present, rc)| ConnAck {
                session_present,
                reason_code: ReasonCode::from_v311_connack_return_code(rc).unwrap(),
                properties: ConnAckProperties::default(),
            })
            .boxed()
    }
}

fn publish_props() -> BoxedStrategy<PublishProperties> {
    (
        flag(),
        option::of(any::<u32>()),
        option::of(nonzero16()),
        ostring(),
        obinary(),
        vec(sub_id(), 0..3),
        ostring(),
        user(),
    )
        .prop_map(|(pfi, mei, ta, rt, cd, si, ct, up)| PublishProperties {
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            topic_alias: ta,
            response_topic: rt,
            correlation_data: cd,
            subscription_identifiers: si,
            content_type: ct,
            user_properties: up,
        })
        .boxed()
}

fn publish(v5: bool) -> BoxedStrategy<Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        string(),
        nonzero16(),
        vec(any::<u8>(), 0..64),
        publish_props(),
    )
        .prop_map(move |(qos, dup, retain, topic, id, payload, props)| {
            let qos0 = qos == QoS::AtMostOnce;
            Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                packet_id: if qos0 { 0 } else { id },
                payload: Bytes::from(payload),
                properties: if v5 {
                    props
                } else {
                    PublishProperties::default()
                },
            }
        })
        .boxed()
}

fn ack_props(v5: bool) -> BoxedStrategy<AckProperties> {
    if v5 {
        (ostring(), user())
            .prop_map(|(reason_string, user_properties)| AckProperties {
                reason_string,
                user_properties,
            })
            .boxed()
    } else {
        Just(AckProperties::default()).boxed()
    }
}

fn pub_response(t: PacketType, v5: bool) -> BoxedStrategy<PubResponse> {
    let code = if v5 {
        code(t)
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    };
    (nonzero16(), code, ack_props(v5))
        .prop_map(|(packet_id, reason_code, properties)| PubResponse {
            packet_id,
            reason_code,
            properties,
        })
        .boxed()
}

fn options(v5: bool) -> BoxedStrategy<SubscriptionOptions> {
    let rh = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendAtSubscribeIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    (qos(), any::<bool>(), any::<bool>(), rh)
        .prop_map(
            move |(qos, no_local, retain_as_published, retain_handling)| {
                if v5 {
                    SubscriptionOptions {
                        qos,
                        no_local,
                        retain_as_published,
                        retain_handling,
                    }
                } else {
                    SubscriptionOptions::qos(qos)
                }
            },
        )
        .boxed()
}

fn subscribe(v5: bool) -> BoxedStrategy<Subscribe> {
    let props = if v5 {
        (option::of(sub_id()), user())
            .prop_map(
                |(subscription_identifier, user_properties)| SubscribeProperties {
                    subscription_identifier,
                    user_properties,
                },
            )
            .boxed()
    } else {
        Just(SubscribeProperties::default()).boxed()
    };
    (nonzero16(), vec((string(), options(v5)), 1..4), props)
        .prop_map(|(packet_id, filters, properties)| Subscribe {
            packet_id,
            filters: filters
                .into_iter()
                .map(|(filter, options)| SubscribeFilter { filter, options })
                .collect(),
            properties,
        })
        .boxed()
}

fn suback(v5: bool) -> BoxedStrategy<SubAck> {
    let c = if v5 {
        code(PacketType::SubAck)
    } else {
        proptest::sample::select(vec![
            ReasonCode(0),
            ReasonCode(1),
            ReasonCode(2),
            ReasonCode(0x80),
        ])
        .boxed()
    };
    (nonzero16(), vec(c, 0..4), ack_props(v5))
        .prop_map(|(packet_id, reason_codes, properties)| SubAck {
            packet_id,
            reason_codes,
            properties,
        })
        .boxed()
}

fn unsubscribe(v5: bool) -> BoxedStrategy<Unsubscribe> {
    let props = if v5 {
        user()
            .prop_map(|user_properties| UnsubscribeProperties { user_properties })
            .boxed()
    } else {
        Just(UnsubscribeProperties::default()).boxed()
    };
    (nonzero16(), vec(string(), 1..4), props)
        .prop_map(|(packet_id, filters, properties)| Unsubscribe {
            packet_id,
            filters,
            properties,
        })
        .boxed()
}

fn unsuback(v5: bool) -> BoxedStrategy<UnsubAck> {
    let codes = if v5 {
        vec(code(PacketType::UnsubAck), 0..4).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (nonzero16(), codes, ack_props(v5))
        .prop_map(|(packet_id, reason_codes, properties)| UnsubAck {
            packet_id,
            reason_codes,
            properties,
        })
        .boxed()
}

fn disconnect(v5: bool) -> BoxedStrategy<Disconnect> {
    if !v5 {
        return Just(Disconnect::default()).boxed();
    }
    (
        code(PacketType::Disconnect),
        option::of(any::<u32>()),
        ostring(),
        ostring(),
        user(),
    )
        .prop_map(|(reason_code, sei, rs, sr, up)| Disconnect {
            reason_code,
            properties: DisconnectProperties {
                session_expiry_interval: sei,
                reason_string: rs,
                server_reference: sr,
                user_properties: up,
            },
        })
        .boxed()
}

fn auth() -> BoxedStrategy<Auth> {
    (
        code(PacketType::Auth),
        ostring(),
        obinary(),
        ostring(),
        user(),
    )
        .prop_map(|(reason_code, am, ad, rs, up)| Auth {
            reason_code,
            properties: AuthProperties {
                authentication_method: am,
                authentication_data: ad,
                reason_string: rs,
                user_properties: up,
            },
        })
        .boxed()
}

/// Any valid packet for `version` (CONNECT in either version, as the decoder accepts both).
pub fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version == ProtocolVersion::V5;
    let mut all: Vec<BoxedStrategy<Packet>> = vec![
        connect().prop_map(|c| Packet::Connect(Box::new(c))).boxed(),
        connack(v5)
            .prop_map(|c| Packet::ConnAck(Box::new(c)))
            .boxed(),
        publish(v5).prop_map(Packet::Publish).boxed(),
        pub_response(PacketType::PubAck, v5)
            .prop_map(Packet::PubAck)
            .boxed(),
        pub_response(PacketType::PubRec, v5)
            .prop_map(Packet::PubRec)
            .boxed(),
        pub_response(PacketType::PubRel, v5)
            .prop_map(Packet::PubRel)
            .boxed(),
        pub_response(PacketType::PubComp, v5)
            .prop_map(Packet::PubComp)
            .boxed(),
        subscribe(v5).prop_map(Packet::Subscribe).boxed(),
        suback(v5).prop_map(Packet::SubAck).boxed(),
        unsubscribe(v5).prop_map(Packet::Unsubscribe).boxed(),
        unsuback(v5).prop_map(Packet::UnsubAck).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v5).prop_map(Packet::Disconnect).boxed(),
    ];
    if v5 {
        all.push(auth().prop_map(Packet::Auth).boxed());
    }
    Union::new(all).boxed()
}

/// A protocol version and a valid packet for it.
pub fn versioned_packet() -> BoxedStrategy<(ProtocolVersion, Packet)> {
    prop_oneof![
        packet(ProtocolVersion::V311).prop_map(|p| (ProtocolVersion::V311, p)),
        packet(ProtocolVersion::V5).prop_map(|p| (ProtocolVersion::V5, p)),
    ]
    .boxed()
}
