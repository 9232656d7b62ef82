//! rumqttc v4 (MQTT 3.1.1) and v5 (MQTT 5.0) clients with bounded waits.
//!
//! Each client's event loop runs in its own task and forwards every event to a channel; the
//! loop stops at the first error so that rumqttc never reconnects behind a test's back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Generous bound on every wait in this module.
pub const WAIT: Duration = crate::WAIT;

macro_rules! client_impl {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        pub struct $name {
            /// The rumqttc handle, for publish/subscribe/disconnect.
            pub client: AsyncClient,
            events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
            task: JoinHandle<()>,
        }

        impl $name {
            /// Starts the event loop and waits (bounded) for a successful CONNACK.
            pub async fn connect(opts: MqttOptions) -> ($name, ConnAck) {
                let (client, mut el) = AsyncClient::new(opts, 1000);
                let (tx, events) = mpsc::unbounded_channel();
                let task = tokio::spawn(async move {
                    loop {
                        let r = el.poll().await;
                        let stop = r.is_err();
                        if tx.send(r).is_err() || stop {
                            break;
                        }
                    }
                });
                let mut c = $name {
                    client,
                    events,
                    task,
                };
                let ack = c
                    .wait_for(|ev| match ev {
                        Event::Incoming(Packet::ConnAck(a)) => Some(a.clone()),
                        _ => None,
                    })
                    .await;
                (c, ack)
            }

            /// Next event or error within `limit`; `None` on timeout or when the loop ended.
            pub async fn next_event(
                &mut self,
                limit: Duration,
            ) -> Option<Result<Event, ConnectionError>> {
                tokio::time::timeout(limit, self.events.recv())
                    .await
                    .ok()
                    .flatten()
            }

            /// Waits for the first event mapped to `Some` by `f`; panics on error or timeout.
            pub async fn wait_for<T>(&mut self, mut f: impl FnMut(&Event) -> Option<T>) -> T {
                let deadline = Instant::now() + WAIT;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.next_event(left).await {
                        Some(Ok(ev)) => {
                            if let Some(t) = f(&ev) {
                                return t;
                            }
                        }
                        Some(Err(e)) => panic!("client connection error while waiting: {e:?}"),
                        None => panic!("nothing matching arrived within {WAIT:?}"),
                    }
                }
            }

            /// Waits for the next incoming PUBLISH.
            pub async fn next_publish(&mut self) -> Publish {
                self.wait_for(|ev| match ev {
                    Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
                    _ => None,
                })
                .await
            }

            /// Waits for the next SUBACK.
            pub async fn wait_suback(&mut self) -> SubAck {
                self.wait_for(|ev| match ev {
                    Event::Incoming(Packet::SubAck(a)) => Some(a.clone()),
                    _ => None,
                })
                .await
            }

            /// Subscribes and waits for the SUBACK.
            pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
                self.client
                    .subscribe(filter, qos)
                    .await
                    .expect("queue SUBSCRIBE");
                self.wait_suback().await
            }

            /// Publishes and, for QoS 1/2, waits for the PUBACK / PUBCOMP.
            pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
                self.client
                    .publish(topic, qos, retain, payload.to_vec())
                    .await
                    .expect("queue PUBLISH");
                self.wait_publish_done(qos).await;
            }

            /// Waits for the acknowledgement that completes an outgoing publish of `qos`.
            pub async fn wait_publish_done(&mut self, qos: QoS) {
                match qos {
                    QoS::AtMostOnce => {
                        self.wait_for(|ev| {
                            matches!(ev, Event::Outgoing(Outgoing::Publish(_))).then_some(())
                        })
                        .await
                    }
                    QoS::AtLeastOnce => {
                        self.wait_for(|ev| {
                            matches!(ev, Event::Incoming(Packet::PubAck(_))).then_some(())
                        })
                        .await
                    }
                    QoS::ExactlyOnce => {
                        self.wait_for(|ev| {
                            matches!(ev, Event::Incoming(Packet::PubComp(_))).then_some(())
                        })
                        .await
                    }
                }
            }

            /// Waits until the connection ends; returns the error that ended it.
            pub async fn wait_closed(&mut self) -> ConnectionError {
                let deadline = Instant::now() + WAIT;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.next_event(left).await {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return e,
                        None => panic!("connection still open after {WAIT:?}"),
                    }
                }
            }

            /// Sends DISCONNECT and waits until it is written.
            pub async fn disconnect(mut self) {
                self.client.disconnect().await.expect("queue DISCONNECT");
                let deadline = Instant::now() + WAIT;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.next_event(left).await {
                        Some(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    }
                }
                // Let the event loop flush the DISCONNECT before the socket is dropped.
                let _ = tokio::time::timeout(WAIT, self.events.recv()).await;
                self.task.abort();
            }

            /// Drops the TCP connection without DISCONNECT (an abnormal close).
            pub async fn drop_abruptly(mut self) {
                self.task.abort();
                let _ = (&mut self.task).await;
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.task.abort();
            }
        }
    };
}

/// MQTT 3.1.1 clients (`rumqttc`).
pub mod v4 {
    use super::*;
    pub use rumqttc::{
        AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, LastWill, MqttOptions,
        Outgoing, Packet, Publish, QoS, SubAck, SubscribeReasonCode,
    };

    client_impl!(Client, "A rumqttc MQTT 3.1.1 client.");

    /// Options for `id` at `addr`: clean session, 30 s keepalive.
    pub fn opts(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_clean_session(true);
        o
    }
}

/// MQTT 5.0 clients (`rumqttc::v5`).
pub mod v5 {
    use super::*;
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::mqttbytes::v5::{
        ConnAck, ConnectProperties, ConnectReturnCode, DisconnectReasonCode, Filter, LastWill,
        LastWillProperties, Packet, Publish, PublishProperties, RetainForwardRule, SubAck,
        SubscribeProperties, SubscribeReasonCode,
    };
    pub use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
    pub use rumqttc::{Outgoing, v5::mqttbytes::v5::Disconnect};

    client_impl!(Client, "A rumqttc MQTT 5.0 client.");

    /// Options for `id` at `addr`: clean start, 30 s keepalive.
    pub fn opts(addr: SocketAddr, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_clean_start(true);
        o
    }

    /// The reason code of a server DISCONNECT that ended a connection, if that is what ended it.
    pub fn server_disconnect_reason(e: &ConnectionError) -> Option<DisconnectReasonCode> {
        match e {
            ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => {
                Some(*reason_code)
            }
            _ => None,
        }
    }
}
