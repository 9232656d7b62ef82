//! A publishing client: closed loop (a window of outstanding deliveries) or open loop (a
//! fixed schedule; the payload carries the *scheduled* send time, so a late generator or a
//! slow broker shows up as latency instead of silently lowering the offered rate).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use halyard_codec::{MAX_PACKET_SIZE, Packet, ProtocolVersion, QoS, decode, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::time::Instant as TokioInstant;

use super::mqtt::{self, READ_CHUNK, SessionKind};
use super::{LoadConfig, LoadError, MAX_BATCH, PubSpec, PubState, PublishTemplate, Shared, phase};
use crate::latency::Latency;
use crate::payload::Stamp;

/// Stall timeouts (each answered with a PINGREQ) before a closed-loop window is written off.
const STALL_NUDGES: u32 = 4;

/// Runs one publisher until the run is DONE; failures before DRAIN are recorded in `shared`.
pub(super) async fn run(cfg: LoadConfig, shared: Arc<Shared>, spec: PubSpec) {
    if let Err(e) = publish(&cfg, &shared, &spec).await
        && shared.phase() < phase::DRAIN
    {
        shared.fail(&format!("publisher {}", spec.id), &e);
    }
}

async fn publish(cfg: &LoadConfig, shared: &Arc<Shared>, spec: &PubSpec) -> Result<(), LoadError> {
    let client_id = format!("{}-p{}", cfg.id_prefix, spec.id);
    let (stream, rbuf) = mqtt::connect(&cfg.client, &client_id, None, SessionKind::Clean).await?;
    shared.ready.fetch_add(1, Ordering::AcqRel);
    let (rd, wr) = stream.into_split();
    let inflight = Arc::new(AtomicI64::new(0));
    let acker = tokio::spawn(read_acks(
        rd,
        rbuf,
        cfg.client.version,
        inflight.clone(),
        shared.clone(),
        spec.id,
    ));
    let mut phase_rx = shared.phase_tx.subscribe();
    if phase_rx.wait_for(|p| *p >= phase::WARMUP).await.is_err() {
        return Ok(());
    }
    let mut w = Writer {
        cfg,
        shared,
        st: &shared.pubs[spec.id as usize],
        id: spec.id,
        fan: i64::try_from(spec.fan).unwrap_or(i64::MAX),
        template: PublishTemplate::new(&spec.topic, cfg.qos, cfg.payload, cfg.client.version)?,
        wr,
        buf: BytesMut::new(),
        inflight,
        seq: 0,
        packet_id: 0,
        lag: Latency::new(),
    };
    let result = match cfg.rate {
        None => w.closed_loop(&mut phase_rx).await,
        Some(rate) => {
            let per_publisher = rate / shared.pubs.len() as f64;
            w.open_loop(&mut phase_rx, 1e9 / per_publisher).await
        }
    };
    if w.lag.count() > 0 {
        // A poisoned lock only means another task panicked while merging; keep going.
        let mut lag = shared.send_lag.lock().unwrap_or_else(|p| p.into_inner());
        lag.merge(&w.lag);
    }
    // Keep the connection (and the acknowledgement reader) until the drain is over.
    let _ = phase_rx.wait_for(|p| *p >= phase::DONE).await;
    acker.abort();
    result
}

/// Reads PUBACKs (and anything else the broker sends a publisher) until the run ends.
async fn read_acks(
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    v: ProtocolVersion,
    inflight: Arc<AtomicI64>,
    shared: Arc<Shared>,
    id: u32,
) {
    let st = &shared.pubs[id as usize];
    loop {
        let mut acked = 0;
        loop {
            match decode(&mut buf, v, MAX_PACKET_SIZE) {
                Ok(Some(Packet::PubAck(_))) => acked += 1,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    shared.fail(&format!("publisher {id}"), &e.into());
                    return;
                }
            }
        }
        if acked > 0 {
            inflight.fetch_sub(acked, Ordering::AcqRel);
            st.notify.notify_one();
        }
        buf.reserve(READ_CHUNK);
        match rd.read_buf(&mut buf).await {
            Ok(n) if n > 0 => {}
            Ok(_) | Err(_) => {
                if shared.phase() < phase::DRAIN {
                    shared.fail(&format!("publisher {id}"), &LoadError::Closed);
                }
                return;
            }
        }
    }
}

/// The writing side of one publisher.
struct Writer<'a> {
    cfg: &'a LoadConfig,
    shared: &'a Shared,
    st: &'a PubState,
    id: u32,
    fan: i64,
    template: PublishTemplate,
    wr: OwnedWriteHalf,
    buf: BytesMut,
    inflight: Arc<AtomicI64>,
    seq: u64,
    packet_id: u16,
    /// Open loop, during MEASURE: how late each message left against its schedule (the
    /// generator's own share of the measured latency: timer granularity, its CPU).
    lag: Latency,
}

impl Writer<'_> {
    /// QoS 1 publishes that may still be sent before the in-flight limit.
    fn inflight_room(&self) -> usize {
        if self.cfg.qos == QoS::AtMostOnce {
            return MAX_BATCH;
        }
        let used = usize::try_from(self.inflight.load(Ordering::Acquire)).unwrap_or(0);
        self.cfg.inflight.saturating_sub(used)
    }

    /// Encodes and writes `n` messages; `stamp_at(i)` gives the stamp time of the i-th and
    /// how late it leaves against it.
    async fn send(
        &mut self,
        n: usize,
        phase_now: u8,
        stamp_at: impl Fn(u64) -> (u64, u32),
    ) -> Result<(), LoadError> {
        self.buf.clear();
        for i in 0..n as u64 {
            self.packet_id = if self.packet_id == u16::MAX {
                1
            } else {
                self.packet_id + 1
            };
            let (sent_ns, lag_ns) = stamp_at(i);
            let stamp = Stamp {
                sent_ns,
                seq: self.seq,
                publisher: self.id,
                lag_ns,
            };
            self.template.write(&mut self.buf, self.packet_id, &stamp);
            self.seq += 1;
        }
        self.st
            .outstanding
            .fetch_add(n as i64 * self.fan, Ordering::AcqRel);
        if self.cfg.qos != QoS::AtMostOnce {
            self.inflight.fetch_add(n as i64, Ordering::AcqRel);
        }
        self.st.sent.store(self.seq, Ordering::Release);
        if phase_now == phase::MEASURE {
            self.st.sent_measured.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.wr.write_all(&self.buf).await?;
        Ok(())
    }

    /// Sends a PINGREQ: some brokers leave bytes unread in a socket until more arrive (seen
    /// with Mosquitto 2.0.11 and a full window sent in one write), which would deadlock a
    /// closed loop; a ping is what an idle real client would send.
    async fn nudge(&mut self) -> Result<(), LoadError> {
        self.buf.clear();
        encode(&Packet::PingReq, self.cfg.client.version, &mut self.buf)?;
        self.st.nudges.fetch_add(1, Ordering::Relaxed);
        self.wr.write_all(&self.buf).await?;
        Ok(())
    }

    /// Sends whenever the window has room: at most `window * fan` deliveries outstanding.
    async fn closed_loop(&mut self, phase_rx: &mut watch::Receiver<u8>) -> Result<(), LoadError> {
        let limit = self.cfg.window as i64 * self.fan;
        let stall = tokio::time::sleep(self.cfg.stall_timeout);
        tokio::pin!(stall);
        let mut idle = 0;
        loop {
            let ph = self.shared.phase();
            if ph >= phase::DRAIN {
                return Ok(());
            }
            let outstanding = self.st.outstanding.load(Ordering::Acquire);
            let room = usize::try_from((limit - outstanding) / self.fan).unwrap_or(0);
            let n = room.min(MAX_BATCH).min(self.inflight_room());
            if n == 0 {
                tokio::select! {
                    _ = self.st.notify.notified() => {}
                    _ = phase_rx.changed() => {}
                    _ = &mut stall => {
                        if room == 0 {
                            idle += 1;
                            if idle >= STALL_NUDGES {
                                // Nothing came back after several nudges: the outstanding
                                // deliveries are written off so the run can go on (they are
                                // counted as lost unless they still arrive).
                                self.st.outstanding.store(0, Ordering::Release);
                                self.st.stalls.fetch_add(1, Ordering::Relaxed);
                                idle = 0;
                            } else {
                                self.nudge().await?;
                            }
                        }
                        stall.as_mut().reset(TokioInstant::now() + self.cfg.stall_timeout);
                    }
                }
                continue;
            }
            let now = self.shared.clock.now_ns();
            self.send(n, ph, |_| (now, 0)).await?;
            idle = 0;
            stall
                .as_mut()
                .reset(TokioInstant::now() + self.cfg.stall_timeout);
        }
    }

    /// Sends on a fixed schedule of one message every `interval_ns`.
    async fn open_loop(
        &mut self,
        phase_rx: &mut watch::Receiver<u8>,
        interval_ns: f64,
    ) -> Result<(), LoadError> {
        let clock = self.shared.clock;
        let start = clock.now_ns();
        let at = |k: u64| start + (k as f64 * interval_ns) as u64;
        let mut k: u64 = 0;
        loop {
            let ph = self.shared.phase();
            if ph >= phase::DRAIN {
                return Ok(());
            }
            let now = clock.now_ns();
            let due = ((now - start) as f64 / interval_ns) as u64 + 1;
            let n = usize::try_from(due.saturating_sub(k))
                .unwrap_or(usize::MAX)
                .min(MAX_BATCH)
                .min(self.inflight_room());
            if n == 0 {
                if due > k {
                    // Late but blocked by the in-flight limit: wait for acknowledgements.
                    tokio::select! {
                        _ = self.st.notify.notified() => {}
                        _ = phase_rx.changed() => {}
                    }
                } else {
                    let wake = clock.origin() + Duration::from_nanos(at(k));
                    tokio::select! {
                        _ = tokio::time::sleep_until(TokioInstant::from_std(wake)) => {}
                        _ = phase_rx.changed() => {}
                    }
                }
                continue;
            }
            let first = k;
            if ph == phase::MEASURE {
                for i in 0..n as u64 {
                    self.lag.record(now.saturating_sub(at(first + i)));
                }
            }
            self.send(n, ph, |i| {
                let t = at(first + i);
                (t, u32::try_from(now.saturating_sub(t)).unwrap_or(u32::MAX))
            })
            .await?;
            k += n as u64;
        }
    }
}
