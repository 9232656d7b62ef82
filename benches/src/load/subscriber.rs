//! A subscribing client: records latency and per-publisher sequence accounting, acknowledges
//! QoS 1 deliveries, and opens the publishers' windows as deliveries arrive.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use halyard_codec::{MAX_PACKET_SIZE, Packet, PubResponse, QoS, decode, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::mqtt::{self, READ_CHUNK, SessionKind};
use super::{LoadConfig, LoadError, Shared, SubOutcome, SubSpec, phase};
use crate::payload::Stamp;
use crate::tracker::SeqTracker;

/// Runs one subscriber until the run is DONE and returns what it saw. Failures before DONE
/// are recorded in `shared`; the outcome then holds what arrived until the failure.
pub(super) async fn run(cfg: LoadConfig, shared: Arc<Shared>, spec: SubSpec) -> SubOutcome {
    let mut out = SubOutcome {
        streams: spec
            .expects
            .iter()
            .map(|&p| (p, SeqTracker::default()))
            .collect(),
        ..SubOutcome::default()
    };
    if let Err(e) = subscribe(&cfg, &shared, &spec, &mut out).await
        && shared.phase() < phase::DONE
    {
        shared.fail(&format!("subscriber {}", spec.id), &e);
    }
    out
}

async fn subscribe(
    cfg: &LoadConfig,
    shared: &Shared,
    spec: &SubSpec,
    out: &mut SubOutcome,
) -> Result<(), LoadError> {
    let client_id = format!("{}-s{}", cfg.id_prefix, spec.id);
    let v = cfg.client.version;
    let session = if cfg.persistent {
        SessionKind::Persistent
    } else {
        SessionKind::Clean
    };
    let (mut s, mut rbuf) = mqtt::connect(
        &cfg.subscriber_params(),
        &client_id,
        Some((&spec.filter, cfg.qos)),
        session,
    )
    .await?;
    shared.ready.fetch_add(1, Ordering::AcqRel);
    let index: HashMap<u32, usize> = spec
        .expects
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, i))
        .collect();
    let mut arrived = vec![0i64; spec.expects.len()];
    let mut touched: Vec<usize> = Vec::new();
    let mut wbuf = BytesMut::new();
    let mut phase_rx = shared.phase_tx.subscribe();
    loop {
        let now = shared.clock.now_ns();
        let measuring = shared.phase() == phase::MEASURE;
        while let Some(p) = decode(&mut rbuf, v, MAX_PACKET_SIZE)? {
            let Packet::Publish(p) = p else { continue };
            if p.qos == QoS::AtLeastOnce {
                encode(&Packet::PubAck(PubResponse::new(p.packet_id)), v, &mut wbuf)?;
            }
            let Some(stamp) = Stamp::read(&p.payload) else {
                out.foreign += 1;
                continue;
            };
            let Some(&i) = index.get(&stamp.publisher) else {
                out.foreign += 1;
                continue;
            };
            out.streams[i].1.record(stamp.seq);
            if measuring {
                out.latency.record(now.saturating_sub(stamp.sent_ns));
                out.from_send.record(
                    now.saturating_sub(stamp.sent_ns)
                        .saturating_sub(u64::from(stamp.lag_ns)),
                );
                out.delivered += 1;
            }
            if arrived[i] == 0 {
                touched.push(i);
            }
            arrived[i] += 1;
        }
        for i in touched.drain(..) {
            let st = &shared.pubs[spec.expects[i] as usize];
            st.outstanding
                .fetch_sub(std::mem::take(&mut arrived[i]), Ordering::AcqRel);
            st.notify.notify_one();
        }
        if !wbuf.is_empty() {
            s.write_all(&wbuf).await?;
            wbuf.clear();
        }
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            _ = phase_rx.wait_for(|p| *p >= phase::DONE) => return Ok(()),
            r = s.read_buf(&mut rbuf) => {
                if r? == 0 {
                    return Err(LoadError::Closed);
                }
            }
        }
    }
}
