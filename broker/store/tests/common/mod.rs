//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use halyard_store::{
    InflightEntry, InflightStage, SessionRecord, StoreConfig, StoredMessage, SubscriptionRecord,
};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig::with_dir(dir)
}

pub fn msg(topic: &str, payload: &[u8]) -> StoredMessage {
    StoredMessage {
        topic: topic.to_owned(),
        payload: Bytes::copy_from_slice(payload),
        qos: 1,
        retain: false,
        properties: Bytes::from_static(&[0x01, 0x01]),
        expires_at_unix_ms: None,
        publisher_id: Some("pub-1".to_owned()),
    }
}

pub fn expiring(topic: &str, payload: &[u8], expires_at: u64) -> StoredMessage {
    StoredMessage {
        expires_at_unix_ms: Some(expires_at),
        ..msg(topic, payload)
    }
}

pub fn session(client: &str, expiry_secs: u32, disconnected_at: Option<u64>) -> SessionRecord {
    SessionRecord {
        client_id: client.to_owned(),
        session_expiry_interval_secs: expiry_secs,
        disconnected_at_unix_ms: disconnected_at,
        protocol_version: 5,
        subscriptions: vec![
            SubscriptionRecord {
                filter: "a/+/c".to_owned(),
                options: 0x01,
                subscription_id: Some(7),
            },
            SubscriptionRecord {
                filter: "$share/g/x/#".to_owned(),
                options: 0x02,
                subscription_id: None,
            },
        ],
        inflight: vec![
            InflightEntry {
                packet_id: 3,
                stage: InflightStage::AwaitingPuback,
                message: msg("a/b/c", b"one"),
            },
            InflightEntry {
                packet_id: 9,
                stage: InflightStage::AwaitingPubcomp,
                message: msg("a/b/c", b"two"),
            },
        ],
        incoming_qos2: vec![4, 11],
    }
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Minimal executor: polls the future on this thread, parking between wake-ups.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
