//! The store side of a connection (`[store] enabled = true`): storing a session when its
//! CONNECT is accepted, write-ahead of each step's output, PUBLISHes acknowledged once their
//! deliveries are durable, and the session's state when the connection closes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use halyard_codec::{ProtocolVersion, QoS, ReasonCode};
use halyard_session::{ClientId, Message, Session, SessionChanges, Will};
use halyard_store::{Batch, Committed, StoreError};

use super::ConnTask;
use crate::cluster::{AckWait, Forward};
use crate::durable::{self, QueueLedger};
use crate::engine::publish;
use crate::engine::thread::count_drop;
use crate::engine::{Moving, Routed, SessionKey};

/// A PUBLISH whose acknowledgement waits for its deliveries to be stored.
pub(super) struct StepPublish {
    packet_id: Option<u16>,
    routed: Vec<Routed>,
    /// Its writes, submitted together with the step's other PUBLISHes' by
    /// [`ConnTask::complete_staged`]. `None`: nothing to store (or refused by the ACL with
    /// `code`).
    batch: Option<Batch>,
    /// In a cluster, a QoS 1/2 PUBLISH's wait for its retained update's commit.
    retained: Option<crate::cluster::retained::RetainWait>,
    /// A copy for another node is queued only when `retained` is awaited (a full link
    /// queue): the step's later PUBLISHes forward [`Forward::Later`].
    blocked: bool,
    code: ReasonCode,
}

impl ConnTask {
    /// Protocol level for store records: 5 for MQTT 5.0, else 4.
    pub(super) fn protocol_level(&self) -> u8 {
        if self.conn.protocol_version() == ProtocolVersion::V5 {
            5
        } else {
            4
        }
    }

    /// Marks the session stored (or not) here and on its route, so that publishers store
    /// their deliveries to it before acknowledging.
    pub(super) fn set_persistent(&mut self, on: bool) {
        self.persistent = on;
        self.stored |= on;
        if let Some(r) = &self.route {
            r.set_persistent(on);
        }
    }

    /// Store side of accepting a CONNECT (store on): a session whose Session Expiry
    /// Interval is not 0 is stored before the CONNACK (a resumed one already is: it keeps
    /// its ledger); one with 0 is removed from the store. Returns the session to resume.
    pub(super) async fn prepare_stored(
        &mut self,
        now: Instant,
        moving: Option<Box<Moving>>,
        replacing: bool,
    ) -> Result<Option<Session>, ReasonCode> {
        let expiry = self.conn.session_expiry_interval().unwrap_or(0);
        let Some(client_id) = self.client_id.clone() else {
            return Ok(moving.map(|m| m.session));
        };
        let durable = self.ctx.broker.durable.clone();
        let pv = self.protocol_level();
        let clock = durable::wall_clock(now);
        let mut resumed = None;
        match moving {
            Some(m) if expiry > 0 && m.session.tracks_changes() => {
                let Moving {
                    session,
                    mut ledger,
                    ..
                } = *m;
                // Rewrite the record without its disconnect time: connected again, its
                // expiry no longer runs (after a crash it counts from the last commit).
                let record = SessionChanges {
                    expiry_interval: true,
                    ..SessionChanges::default()
                };
                let written = durable.persist_changes(record, &session, &mut ledger, pv, &clock);
                if let Err(e) = written.await {
                    tracing::warn!(%client_id, error = %e, "resumed session record not stored");
                }
                self.ledger = Some(Box::new(ledger));
                self.set_persistent(true);
                return Ok(Some(session));
            }
            Some(m) if expiry > 0 => resumed = Some(m.session),
            Some(m) => {
                let mut session = m.session;
                session.set_track_changes(false);
                self.set_persistent(false);
                if let Err(e) = durable.delete_session(&client_id).await {
                    tracing::warn!(%client_id, error = %e, "ended session not removed from the store");
                }
                return Ok(Some(session));
            }
            None if expiry > 0 => {}
            None => {
                self.set_persistent(false);
                if replacing && let Err(e) = durable.delete_session(&client_id).await {
                    tracing::warn!(%client_id, error = %e, "replaced session not removed from the store");
                }
                return Ok(None);
            }
        }
        let was_resumed = resumed.is_some();
        let mut session = resumed.unwrap_or_else(|| {
            Session::new(client_id.clone(), expiry, &self.ctx.broker.session_config)
        });
        // QoS 1/2 deliveries that waited for the session are stored with it (storing the
        // session replaces the entries the publishers wrote).
        let mut keep = Vec::new();
        for (d, seq) in std::mem::take(&mut self.held) {
            if d.qos == QoS::AtMostOnce {
                keep.push((d, seq));
            } else if let Err(reason) = session.enqueue(now, d) {
                count_drop(self.ctx.stats(), reason);
            }
        }
        self.held = keep;
        match durable
            .persist_session(&mut session, pv, None, &clock)
            .await
        {
            Ok(c) => {
                // Stored anew: the queue entries' numbers fix the packet ids.
                session.set_queued_packet_ids(
                    c.seqs.iter().map(|seq| seq.map(durable::packet_id_for)),
                );
                self.ledger = Some(Box::new(QueueLedger::from_seqs(
                    c.seqs.into_iter().flatten(),
                )));
                self.set_persistent(true);
                Ok(Some(session))
            }
            Err(e) => {
                tracing::warn!(%client_id, error = %e, "session not stored");
                self.ctx.stats().store_refused(e.reason_code());
                session.set_track_changes(false);
                if was_resumed {
                    // Never lose a resumed session: it continues in memory only.
                    Ok(Some(session))
                } else {
                    Err(e.reason_code())
                }
            }
        }
    }

    /// Write-ahead for a stored session: makes what changed in it durable (in-flight
    /// entries, incoming QoS 2 ids, queue entries gone, subscriptions) before the output
    /// that shows it is written. False when the store failed: the client is then
    /// disconnected without writing (the output could acknowledge what is not durable).
    pub(super) async fn persist_step(&mut self) -> bool {
        if self.unsafe_output {
            return false;
        }
        if !self.persistent {
            return true;
        }
        let pv = self.protocol_level();
        let Some((changes, session)) = self.conn.take_session_changes() else {
            return true;
        };
        let clock = durable::wall_clock(Instant::now());
        let ledger = self.ledger.get_or_insert_with(Box::default);
        let pending = self
            .ctx
            .broker
            .durable
            .persist_changes(changes, session, ledger, pv, &clock);
        match pending.await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(client_id = ?self.client_id, error = %e, "session state not stored; disconnecting");
                self.ctx.stats().store_refused(e.reason_code());
                self.unsafe_output = true;
                false
            }
        }
    }

    /// Routes a PUBLISH and submits its durable deliveries (store on); acknowledged by
    /// [`Self::complete_staged`] once the commit returned. One group commit usually covers
    /// every PUBLISH of a step.
    pub(super) fn stage_publish(
        &mut self,
        now: Instant,
        packet_id: Option<u16>,
        message: Arc<Message>,
    ) {
        if let Some(code) = self.publish_denied(&message) {
            self.step.push(StepPublish {
                packet_id,
                routed: Vec::new(),
                batch: None,
                retained: None,
                blocked: false,
                code,
            });
            return;
        }
        let broker = &self.ctx.broker;
        // The retained index changes with the routing snapshot, as without the store: a
        // SUBSCRIBE arriving during the commit finds either the subscription matched or the
        // retained message (the stored copy follows with the commit).
        let retained = if message.retain {
            publish::update_retained(broker, self.ctx.stats(), &message)
        } else {
            None
        };
        // In a cluster the copies for other nodes leave now, and the acknowledgement also
        // waits for those nodes (which store them for their persistent sessions first).
        let mut routed = Vec::new();
        // Copies queue now unless an earlier one of this step still waits for room.
        let forward = if self.step.iter().any(|p| p.blocked) {
            Forward::Later
        } else {
            Forward::Now
        };
        let (_, acks) = publish::route_collect_acked(broker, &message, &mut routed, forward);
        let blocked = acks.as_ref().is_some_and(AckWait::blocked);
        let retained = crate::cluster::retained::ack_wait(message.qos, acks, retained);
        let targets = publish::durable_targets(&routed);
        let client_id = self.client_id.as_deref().unwrap_or("");
        let incoming = match packet_id {
            Some(id) if self.persistent && message.qos == QoS::ExactlyOnce => Some((client_id, id)),
            _ => None,
        };
        let clock = durable::wall_clock(now);
        let batch = broker
            .durable
            .publish_batch(&message, &targets, incoming, &clock);
        drop(targets);
        self.step.push(StepPublish {
            packet_id,
            routed,
            batch,
            retained,
            blocked,
            code: ReasonCode::SUCCESS,
        });
    }

    /// Submits the staged PUBLISHes' writes in one submission (one group commit, one
    /// wake-up), waits for it, then routes and acknowledges each in arrival order; a refused
    /// one gets the store's reason code (5.0) or closes the connection (3.1.1 has no way to
    /// refuse a PUBLISH).
    pub(super) async fn complete_staged(&mut self) {
        let mut step = std::mem::take(&mut self.step);
        let mut batches = Vec::new();
        let mut had_batch = Vec::with_capacity(step.len());
        for p in &mut step {
            let b = p.batch.take();
            had_batch.push(b.is_some());
            batches.extend(b);
        }
        let mut results = if batches.is_empty() {
            Vec::new().into_iter()
        } else {
            self.ctx
                .broker
                .durable
                .submit_each(batches)
                .await
                .into_iter()
        };
        for (p, had_batch) in step.into_iter().zip(had_batch) {
            let mut code = p.code;
            let result = if had_batch {
                // `submit_each` answers every batch; a missing answer means a closed store.
                Some(
                    results
                        .next()
                        .unwrap_or_else(|| Err(StoreError::Closed.into())),
                )
            } else if code == ReasonCode::SUCCESS {
                Some(Ok(Committed::default()))
            } else {
                None
            };
            match result {
                Some(Ok(committed)) => {
                    let mut routed = p.routed;
                    publish::apply_seqs(&mut routed, committed.seqs);
                    for r in routed {
                        self.outbox.push(r);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(client_id = ?self.client_id, error = %e, "publish refused by the store");
                    code = e.reason_code();
                    self.ctx.stats().store_refused(code);
                    if p.packet_id.is_some() && self.conn.protocol_version() != ProtocolVersion::V5
                    {
                        self.conn.disconnect(ReasonCode::UNSPECIFIED_ERROR);
                        continue;
                    }
                }
                None => {}
            }
            self.acknowledge_after(p.packet_id, code, p.retained).await;
        }
    }

    /// Store side of a closing connection (store on): a kept, stored session is written
    /// whole with its disconnect time, and a delayed will stored (returned with `true`); a
    /// stored session that ended with the connection is removed, unless a clean start
    /// replaced it meanwhile. Returns the will unchanged.
    pub(super) async fn store_closing(
        &mut self,
        client_id: &ClientId,
        key: SessionKey,
        session: Option<&mut Moving>,
        will: Option<Will>,
        now: Instant,
    ) -> (Option<Will>, bool) {
        let durable = self.ctx.broker.durable.clone();
        if !durable.is_enabled() {
            return (will, false);
        }
        let clock = durable::wall_clock(now);
        let Some(m) = session.filter(|m| m.session.tracks_changes()) else {
            let ours = {
                let reg = self.ctx.broker.registry();
                reg.get(client_id).is_none_or(|e| e.key == key)
            };
            if self.stored && ours {
                self.set_persistent(false);
                if let Err(e) = durable.delete_session(client_id).await {
                    tracing::warn!(%client_id, error = %e, "ended session not removed from the store");
                }
            }
            return (will, false);
        };
        let parked = durable.persist_park(
            &mut m.session,
            &mut m.ledger,
            m.protocol_version,
            now,
            &clock,
        );
        if let Err(e) = parked.await {
            tracing::warn!(%client_id, error = %e, "offline session not stored");
            self.ctx.stats().store_refused(e.reason_code());
        }
        let delayed = will.as_ref().filter(|w| w.delay() > Duration::ZERO);
        let mut stored_will = false;
        if let Some(w) = delayed {
            let (_, at) = self.ctx.offline_deadlines(&m.session, Some(w.clone()), now);
            if let Some((_, fire_at)) = at {
                match durable.put_will(client_id, w, fire_at, &clock).await {
                    Ok(_) => stored_will = true,
                    Err(e) => tracing::warn!(%client_id, error = %e, "delayed will not stored"),
                }
            }
        }
        (will, stored_will)
    }
}
