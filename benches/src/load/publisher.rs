//! A publishing client: closed loop (a window of outstanding deliveries) or open loop (a
//! fixed schedule; the payload carries the *scheduled* send time, so a late generator or a
//! slow broker shows up as latency instead of silently lowering the offered rate). In open
//! loop the worker's pacer thread ([`super::pacer`]) writes the messages; the task only
//! connects, hands the pacer its socket and reads the acknowledgements.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::Sender;

use bytes::BytesMut;
use halyard_codec::{MAX_PACKET_SIZE, Packet, ProtocolVersion, QoS, decode, encode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;
use tokio::time::Instant as TokioInstant;

use super::mqtt::{self, READ_CHUNK, SessionKind};
use super::pacer::Paced;
use super::{LoadConfig, LoadError, MAX_BATCH, PubSpec, PubState, PublishTemplate, Shared, phase};
use crate::payload::Stamp;

/// Stall timeouts (each answered with a PINGREQ) before a closed-loop window is written off.
const STALL_NUDGES: u32 = 4;

/// Runs one publisher until the run is DONE; failures before DRAIN are recorded in `shared`.
/// Open loop (`pacer` given): hands its socket to the worker's pacer.
pub(super) async fn run(
    cfg: LoadConfig,
    shared: Arc<Shared>,
    spec: PubSpec,
    pacer: Option<Sender<Paced>>,
) {
    if let Err(e) = publish(&cfg, &shared, &spec, pacer).await
        && shared.phase() < phase::DRAIN
    {
        shared.fail(&format!("publisher {}", spec.id), &e);
    }
}

async fn publish(
    cfg: &LoadConfig,
    shared: &Arc<Shared>,
    spec: &PubSpec,
    pacer: Option<Sender<Paced>>,
) -> Result<(), LoadError> {
    let client_id = format!("{}-p{}", cfg.id_prefix, spec.id);
    let (stream, rbuf) = mqtt::connect(&cfg.client, &client_id, None, SessionKind::Clean).await?;
    let inflight = Arc::new(AtomicI64::new(0));
    let enc = Encoder {
        st_index: spec.id as usize,
        shared: shared.clone(),
        id: spec.id,
        fan: i64::try_from(spec.fan).unwrap_or(i64::MAX),
        qos: cfg.qos,
        inflight_limit: cfg.inflight,
        template: PublishTemplate::new(&spec.topic, cfg.qos, cfg.payload, cfg.client.version)?,
        inflight: inflight.clone(),
        seq: 0,
        packet_id: 0,
    };
    let mut phase_rx = shared.phase_tx.subscribe();
    let v = cfg.client.version;
    let Some(pacer) = pacer else {
        shared.ready.fetch_add(1, Ordering::AcqRel);
        let (rd, wr) = stream.into_split();
        let acker = tokio::spawn(read_acks(rd, rbuf, v, inflight, shared.clone(), spec.id));
        if phase_rx.wait_for(|p| *p >= phase::WARMUP).await.is_err() {
            return Ok(());
        }
        let mut w = Writer {
            cfg,
            shared,
            enc,
            wr,
            buf: BytesMut::new(),
        };
        let result = w.closed_loop(&mut phase_rx).await;
        // Keep the connection (and the acknowledgement reader) until the drain is over.
        let _ = phase_rx.wait_for(|p| *p >= phase::DONE).await;
        acker.abort();
        return result;
    };
    // Open loop: the pacer writes through a duplicate of the socket; this task reads.
    let std = stream.into_std()?;
    let paced = Paced {
        id: spec.id,
        stream: std.try_clone()?,
        enc,
    };
    let rd = tokio::net::TcpStream::from_std(std)?;
    if pacer.send(paced).is_err() {
        return Err(LoadError::Config("the pacer thread is gone".into()));
    }
    shared.ready.fetch_add(1, Ordering::AcqRel);
    let acker = tokio::spawn(read_acks(rd, rbuf, v, inflight, shared.clone(), spec.id));
    let _ = phase_rx.wait_for(|p| *p >= phase::DONE).await;
    acker.abort();
    Ok(())
}

/// Reads PUBACKs (and anything else the broker sends a publisher) until the run ends.
async fn read_acks(
    mut rd: impl AsyncRead + Unpin,
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

/// Encodes a publisher's messages and keeps its counters (sequence, packet identifiers,
/// outstanding deliveries, in-flight publishes), for the closed loop and the pacer alike.
pub(super) struct Encoder {
    shared: Arc<Shared>,
    st_index: usize,
    id: u32,
    fan: i64,
    qos: QoS,
    inflight_limit: usize,
    template: PublishTemplate,
    inflight: Arc<AtomicI64>,
    seq: u64,
    packet_id: u16,
}

impl Encoder {
    fn st(&self) -> &PubState {
        &self.shared.pubs[self.st_index]
    }

    /// QoS 1 publishes that may still be sent before the in-flight limit.
    pub(super) fn room(&self) -> usize {
        if self.qos == QoS::AtMostOnce {
            return MAX_BATCH;
        }
        let used = usize::try_from(self.inflight.load(Ordering::Acquire)).unwrap_or(0);
        self.inflight_limit.saturating_sub(used)
    }

    /// Appends `n` messages to `out` and counts them as sent; `stamp_at(i)` gives the stamp
    /// time of the i-th and how late it leaves against it.
    pub(super) fn encode(
        &mut self,
        out: &mut BytesMut,
        n: usize,
        phase_now: u8,
        mut stamp_at: impl FnMut(u64) -> (u64, u32),
    ) {
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
            self.template.write(out, self.packet_id, &stamp);
            self.seq += 1;
        }
        let st = self.st();
        st.outstanding
            .fetch_add(n as i64 * self.fan, Ordering::AcqRel);
        if self.qos != QoS::AtMostOnce {
            self.inflight.fetch_add(n as i64, Ordering::AcqRel);
        }
        st.sent.store(self.seq, Ordering::Release);
        if phase_now == phase::MEASURE {
            st.sent_measured.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// The writing side of one closed-loop publisher.
struct Writer<'a> {
    cfg: &'a LoadConfig,
    shared: &'a Shared,
    enc: Encoder,
    wr: OwnedWriteHalf,
    buf: BytesMut,
}

impl Writer<'_> {
    /// Encodes and writes `n` messages stamped now.
    async fn send(&mut self, n: usize, phase_now: u8) -> Result<(), LoadError> {
        self.buf.clear();
        let now = self.shared.clock.now_ns();
        self.enc.encode(&mut self.buf, n, phase_now, |_| (now, 0));
        self.wr.write_all(&self.buf).await?;
        Ok(())
    }

    /// Sends a PINGREQ: some brokers leave bytes unread in a socket until more arrive (seen
    /// with Mosquitto 2.0.11 and a full window sent in one write), which would deadlock a
    /// closed loop; a ping is what an idle real client would send.
    async fn nudge(&mut self) -> Result<(), LoadError> {
        self.buf.clear();
        encode(&Packet::PingReq, self.cfg.client.version, &mut self.buf)?;
        self.enc.st().nudges.fetch_add(1, Ordering::Relaxed);
        self.wr.write_all(&self.buf).await?;
        Ok(())
    }

    /// Sends whenever the window has room: at most `window * fan` deliveries outstanding.
    async fn closed_loop(&mut self, phase_rx: &mut watch::Receiver<u8>) -> Result<(), LoadError> {
        let limit = self.cfg.window as i64 * self.enc.fan;
        let st = &self.shared.pubs[self.enc.st_index];
        let stall = tokio::time::sleep(self.cfg.stall_timeout);
        tokio::pin!(stall);
        let mut idle = 0;
        loop {
            let ph = self.shared.phase();
            if ph >= phase::DRAIN {
                return Ok(());
            }
            let outstanding = st.outstanding.load(Ordering::Acquire);
            let room = usize::try_from((limit - outstanding) / self.enc.fan).unwrap_or(0);
            let n = room.min(MAX_BATCH).min(self.enc.room());
            if n == 0 {
                tokio::select! {
                    _ = st.notify.notified() => {}
                    _ = phase_rx.changed() => {}
                    _ = &mut stall => {
                        if room == 0 {
                            idle += 1;
                            if idle >= STALL_NUDGES {
                                // Nothing came back after several nudges: the outstanding
                                // deliveries are written off so the run can go on (they are
                                // counted as lost unless they still arrive).
                                st.outstanding.store(0, Ordering::Release);
                                st.stalls.fetch_add(1, Ordering::Relaxed);
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
            self.send(n, ph).await?;
            idle = 0;
            stall
                .as_mut()
                .reset(TokioInstant::now() + self.cfg.stall_timeout);
        }
    }
}
