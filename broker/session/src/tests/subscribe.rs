//! SUBSCRIBE and UNSUBSCRIBE.

use halyard_codec::{
    MqttString, Packet, ProtocolVersion, QoS, ReasonCode, RetainHandling, Subscribe,
    SubscribeFilter, SubscribeProperties, SubscriptionOptions, Unsubscribe, UnsubscribeProperties,
};

use super::util::{Pair, VERSIONS};
use crate::{Event, SessionConfig, SubscribeRequest};

/// A request's status without its checked filter.
fn status(r: &SubscribeRequest) -> Result<(), ReasonCode> {
    r.status.as_ref().map(|_| ()).map_err(|&code| code)
}

fn subscribe_event(pair: &mut Pair) -> (u16, Vec<SubscribeRequest>) {
    match pair.event() {
        Event::Subscribe {
            packet_id,
            requests,
        } => (packet_id, requests),
        other => panic!("expected Subscribe, got {other:?}"),
    }
}

fn suback_codes(pair: &mut Pair) -> Vec<ReasonCode> {
    match pair.recv_one() {
        Packet::SubAck(a) => a.reason_codes,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

fn subscribe_many(pair: &mut Pair, packet_id: u16, filters: &[&str], sub_id: Option<u32>) {
    pair.send(Packet::Subscribe(Subscribe {
        packet_id,
        filters: filters
            .iter()
            .map(|f| SubscribeFilter {
                filter: (*f).into(),
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
            })
            .collect(),
        properties: SubscribeProperties {
            subscription_identifier: sub_id,
            ..SubscribeProperties::default()
        },
    }));
}

#[test]
fn invalid_filters_get_0x8f_per_request_mqtt_4_7_1_2() {
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        subscribe_many(&mut pair, 1, &["ok/+", "bad#", "a/#/b"], None);
        let (id, reqs) = subscribe_event(&mut pair);
        assert_eq!(id, 1);
        let status: Vec<_> = reqs.iter().map(status).collect();
        assert_eq!(
            status,
            [
                Ok(()),
                Err(ReasonCode::TOPIC_FILTER_INVALID),
                Err(ReasonCode::TOPIC_FILTER_INVALID)
            ]
        );
        // The server's codes for refused requests are overridden.
        pair.conn.complete_subscribe(
            pair.now,
            1,
            reqs,
            vec![
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::SUCCESS,
            ],
        );
        let codes = suback_codes(&mut pair);
        let expected_fail = match v {
            // 3.1.1 failure return code 0x80 decodes as 0x80.
            ProtocolVersion::V311 => ReasonCode::UNSPECIFIED_ERROR,
            ProtocolVersion::V5 => ReasonCode::TOPIC_FILTER_INVALID,
        };
        assert_eq!(
            codes,
            [ReasonCode::GRANTED_QOS_1, expected_fail, expected_fail]
        );
        let subs = pair.conn.session().unwrap().subscriptions();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs["ok/+"].options.qos, QoS::AtLeastOnce);
    }
}

#[test]
fn shared_subscription_is_parsed_mqtt_4_8_2_1() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    subscribe_many(&mut pair, 2, &["$share/g1/sensors/#", "$share//x"], None);
    let (_, reqs) = subscribe_event(&mut pair);
    assert_eq!(reqs[0].share_group.as_deref(), Some("g1"));
    let topic_filter = reqs[0].status.as_ref().map(|t| t.as_str());
    assert_eq!(topic_filter, Ok("sensors/#"));
    assert_eq!(reqs[0].filter, "$share/g1/sensors/#");
    assert_eq!(status(&reqs[0]), Ok(()));
    assert_eq!(status(&reqs[1]), Err(ReasonCode::TOPIC_FILTER_INVALID));
}

/// The SUBACK has one code per request whatever the server answered: a missing code is
/// 0x80, extra codes are ignored, a code a SUBACK may not carry becomes 0x80, and a request
/// the session refused keeps its own code.
#[test]
fn suback_codes_follow_the_requests_not_the_servers_list() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    subscribe_many(&mut pair, 1, &["a", "b", "bad#", "c"], None);
    let (_, reqs) = subscribe_event(&mut pair);
    pair.conn.complete_subscribe(
        pair.now,
        1,
        reqs,
        vec![
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::PACKET_TOO_LARGE,
            ReasonCode::GRANTED_QOS_0,
        ],
    );
    assert_eq!(
        suback_codes(&mut pair),
        [
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::UNSPECIFIED_ERROR,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::UNSPECIFIED_ERROR,
        ]
    );
    subscribe_many(&mut pair, 2, &["d"], None);
    let (_, reqs) = subscribe_event(&mut pair);
    pair.conn
        .complete_subscribe(pair.now, 2, reqs, vec![ReasonCode::GRANTED_QOS_1; 3]);
    assert_eq!(suback_codes(&mut pair), [ReasonCode::GRANTED_QOS_1]);
    let subs = pair.conn.session().unwrap().subscriptions();
    assert_eq!(subs.len(), 2, "a and d");
}

#[test]
fn v5_no_local_on_shared_subscription_is_a_protocol_error_mqtt_3_8_3_4() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    let mut options = SubscriptionOptions::qos(QoS::AtMostOnce);
    options.no_local = true;
    pair.subscribe(1, "$share/g/t", options);
    pair.expect_protocol_close(ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn v5_subscription_identifier_is_attached_and_stored() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    subscribe_many(&mut pair, 3, &["a/b"], Some(42));
    let (_, reqs) = subscribe_event(&mut pair);
    assert_eq!(reqs[0].subscription_id, Some(42));
    pair.conn
        .complete_subscribe(pair.now, 3, reqs, vec![ReasonCode::GRANTED_QOS_1]);
    suback_codes(&mut pair);
    let s = pair.conn.session().unwrap().subscriptions()["a/b"];
    assert_eq!(s.subscription_id, Some(42));
    // Re-subscribing replaces the subscription [MQTT-3.8.4-3] and is not new.
    subscribe_many(&mut pair, 4, &["a/b"], None);
    let (_, reqs) = subscribe_event(&mut pair);
    assert!(!reqs[0].is_new, "Retain Handling 1 needs to know");
    pair.conn
        .complete_subscribe(pair.now, 4, reqs, vec![ReasonCode::GRANTED_QOS_0]);
    suback_codes(&mut pair);
    let s = pair.conn.session().unwrap().subscriptions()["a/b"];
    assert_eq!(s.subscription_id, None);
    assert_eq!(s.options.qos, QoS::AtMostOnce);
}

#[test]
fn v5_subscription_identifiers_unavailable_is_0xa1() {
    let cfg = SessionConfig {
        subscription_identifiers_available: false,
        ..SessionConfig::default()
    };
    let mut pair = Pair::connected(ProtocolVersion::V5, cfg);
    subscribe_many(&mut pair, 3, &["a/b"], Some(1));
    pair.expect_protocol_close(ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED);
}

#[test]
fn unavailable_wildcards_and_shared_get_their_codes() {
    let cfg = SessionConfig {
        wildcard_subscription_available: false,
        shared_subscription_available: false,
        ..SessionConfig::default()
    };
    let mut pair = Pair::connected(ProtocolVersion::V5, cfg);
    subscribe_many(&mut pair, 1, &["a/+", "$share/g/a", "a/b"], None);
    let (_, reqs) = subscribe_event(&mut pair);
    let status: Vec<_> = reqs.iter().map(status).collect();
    assert_eq!(
        status,
        [
            Err(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
            Err(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED),
            Ok(())
        ]
    );
}

#[test]
fn subscription_limit_gets_quota_exceeded() {
    let cfg = SessionConfig {
        max_subscriptions: 2,
        ..SessionConfig::default()
    };
    let mut pair = Pair::connected(ProtocolVersion::V5, cfg);
    subscribe_many(&mut pair, 1, &["a", "b", "c"], None);
    let (_, reqs) = subscribe_event(&mut pair);
    assert_eq!(status(&reqs[2]), Err(ReasonCode::QUOTA_EXCEEDED));
    assert_eq!(pair.conn.stats().subscription_limit_hits, 1);
}

/// A 5.0 connection limited to 3 subscriptions that received SUBSCRIBE 1 (a, b) and
/// SUBSCRIBE 2 (c, d) before the server answered the first; the requests of each.
fn two_pipelined_subscribes() -> (Pair, Vec<SubscribeRequest>, Vec<SubscribeRequest>) {
    let cfg = SessionConfig {
        max_subscriptions: 3,
        ..SessionConfig::default()
    };
    let mut pair = Pair::connected(ProtocolVersion::V5, cfg);
    subscribe_many(&mut pair, 1, &["a", "b"], None);
    subscribe_many(&mut pair, 2, &["c", "d"], None);
    let mut requests = pair.events().into_iter().map(|e| match e {
        Event::Subscribe { requests, .. } => requests,
        other => panic!("expected Subscribe, got {other:?}"),
    });
    let (first, second) = (requests.next().unwrap(), requests.next().unwrap());
    (pair, first, second)
}

#[test]
fn pipelined_subscribes_cannot_pass_the_subscription_limit() {
    let (pair, first, second) = two_pipelined_subscribes();
    assert!(first.iter().all(|r| r.status.is_ok()));
    assert_eq!(status(&second[0]), Ok(()));
    assert_eq!(status(&second[1]), Err(ReasonCode::QUOTA_EXCEEDED));
    assert_eq!(pair.conn.stats().subscription_limit_hits, 1);
}

/// An answered SUBSCRIBE frees its packet identifier and its place under the limit: what
/// it granted counts from then on as the session's subscriptions.
#[test]
fn answered_subscribes_free_their_packet_id_and_their_reservation() {
    let (mut pair, first, second) = two_pipelined_subscribes();
    // Answered out of order; the server refuses "b".
    pair.conn.complete_subscribe(
        pair.now,
        2,
        second,
        vec![ReasonCode::GRANTED_QOS_1, ReasonCode::GRANTED_QOS_1],
    );
    assert_eq!(
        suback_codes(&mut pair),
        [ReasonCode::GRANTED_QOS_1, ReasonCode::QUOTA_EXCEEDED]
    );
    pair.conn.complete_subscribe(
        pair.now,
        1,
        first,
        vec![ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED],
    );
    assert_eq!(
        suback_codes(&mut pair),
        [ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED]
    );
    let subs = pair.conn.session().unwrap().subscriptions();
    assert_eq!(subs.len(), 2);
    assert!(subs.contains_key("a") && subs.contains_key("c"));
    // Packet identifier 1 is free again, and one new filter still fits (a, c + e).
    subscribe_many(&mut pair, 1, &["e", "f"], None);
    let (id, reqs) = subscribe_event(&mut pair);
    assert_eq!(id, 1);
    assert_eq!(status(&reqs[0]), Ok(()));
    assert_eq!(status(&reqs[1]), Err(ReasonCode::QUOTA_EXCEEDED));
    // An answer for a SUBSCRIBE no longer pending changes nothing.
    pair.conn.complete_subscribe(
        pair.now,
        2,
        reqs.clone(),
        vec![ReasonCode::GRANTED_QOS_1; 2],
    );
    assert_eq!(pair.conn.session().unwrap().subscriptions().len(), 2);
    pair.conn
        .complete_subscribe(pair.now, 1, reqs, vec![ReasonCode::GRANTED_QOS_1; 2]);
    assert_eq!(
        suback_codes(&mut pair),
        [ReasonCode::GRANTED_QOS_1, ReasonCode::QUOTA_EXCEEDED]
    );
    assert_eq!(pair.conn.session().unwrap().subscriptions().len(), 3);
}

#[test]
fn subscribe_qos_is_capped_at_maximum_qos() {
    let cfg = SessionConfig {
        maximum_qos: QoS::AtLeastOnce,
        ..SessionConfig::default()
    };
    let mut pair = Pair::connected(ProtocolVersion::V5, cfg);
    let mut options = SubscriptionOptions::qos(QoS::ExactlyOnce);
    options.retain_handling = RetainHandling::SendAtSubscribeIfNew;
    pair.subscribe(1, "x", options);
    let (_, reqs) = subscribe_event(&mut pair);
    assert_eq!(reqs[0].options.qos, QoS::AtLeastOnce);
    assert_eq!(
        reqs[0].options.retain_handling,
        RetainHandling::SendAtSubscribeIfNew
    );
    assert!(reqs[0].is_new);
}

#[test]
fn unsubscribe_removes_and_answers_per_version() {
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        subscribe_many(&mut pair, 1, &["a"], None);
        let (_, reqs) = subscribe_event(&mut pair);
        pair.conn
            .complete_subscribe(pair.now, 1, reqs, vec![ReasonCode::GRANTED_QOS_1]);
        suback_codes(&mut pair);
        pair.send(Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            filters: vec![MqttString::from("a"), MqttString::from("zzz")],
            properties: UnsubscribeProperties::default(),
        }));
        match pair.event() {
            Event::Unsubscribe { packet_id, filters } => {
                assert_eq!(packet_id, 2);
                assert_eq!(filters, [MqttString::from("a"), MqttString::from("zzz")]);
            }
            other => panic!("{other:?}"),
        }
        // No codes from the server: the session knows which existed.
        pair.conn.complete_unsubscribe(pair.now, 2, Vec::new());
        match pair.recv_one() {
            Packet::UnsubAck(u) => {
                assert_eq!(u.packet_id, 2);
                let expected = match v {
                    ProtocolVersion::V5 => {
                        vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
                    }
                    ProtocolVersion::V311 => Vec::new(),
                };
                assert_eq!(u.reason_codes, expected);
            }
            other => panic!("{other:?}"),
        }
        assert!(pair.conn.session().unwrap().subscriptions().is_empty());
    }
}

#[test]
fn pending_subscribe_packet_id_reuse_is_a_protocol_error() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    subscribe_many(&mut pair, 1, &["a"], None);
    subscribe_many(&mut pair, 1, &["b"], None);
    let events = pair.events();
    assert!(matches!(events[0], Event::Subscribe { .. }));
    assert!(matches!(events[1], Event::Closed { .. }));
    match pair.recv_one() {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::PROTOCOL_ERROR),
        other => panic!("{other:?}"),
    }
}

/// Topic limits are configured, not from the specification: a filter beyond them gets
/// 0x8F (Topic Filter invalid) and is counted by kind of limit.
#[test]
fn filters_beyond_the_topic_limits_are_refused_and_counted() {
    let cfg = SessionConfig {
        topic_limits: halyard_topics::TopicLimits {
            max_levels: 3,
            max_len: 16,
        },
        ..SessionConfig::default()
    };
    let mut pair = Pair::connected(ProtocolVersion::V5, cfg);
    subscribe_many(
        &mut pair,
        1,
        &["a/b/c", "a/b/c/d", "abcdefghijklmnopq", "$share/g/a/b/c/d"],
        None,
    );
    let (_, reqs) = subscribe_event(&mut pair);
    assert_eq!(status(&reqs[0]), Ok(()));
    assert_eq!(status(&reqs[1]), Err(ReasonCode::TOPIC_FILTER_INVALID));
    assert_eq!(status(&reqs[2]), Err(ReasonCode::TOPIC_FILTER_INVALID));
    assert_eq!(status(&reqs[3]), Err(ReasonCode::TOPIC_FILTER_INVALID));
    assert_eq!(pair.conn.stats().topic_levels_limit_hits, 2);
    assert_eq!(pair.conn.stats().topic_length_limit_hits, 1);
}

/// A PUBLISH whose topic name is beyond the topic limits closes the connection with 0x90
/// (5.0) and is counted.
#[test]
fn publish_beyond_the_topic_limits_is_refused_and_counted() {
    for version in VERSIONS {
        let cfg = SessionConfig {
            topic_limits: halyard_topics::TopicLimits {
                max_levels: 2,
                max_len: 64,
            },
            ..SessionConfig::default()
        };
        let mut pair = Pair::connected(version, cfg);
        pair.publish("a/b/c", QoS::AtMostOnce, 0);
        pair.expect_protocol_close(ReasonCode::TOPIC_NAME_INVALID);
        assert_eq!(pair.conn.stats().topic_levels_limit_hits, 1, "{version:?}");
    }
}
