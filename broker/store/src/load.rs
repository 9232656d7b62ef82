//! Reading everything back at start, with expiry by wall-clock time, and deleting what expired.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use redb::{Database, ReadableTable};
use serde::de::DeserializeOwned;

use crate::batch::Batch;
use crate::db::{
    DbError, FORMAT_NUMBERED_QUEUES, INCOMING, INFLIGHT, LEGACY_QUEUE, META, META_FORMAT,
    META_LAST_COMMIT, QUEUE_ENTRIES, QUEUE_SENT, QUEUES, RETAINED, SESSIONS, WILLS,
};
use crate::error::StoreError;
use crate::record::{
    DroppedAtLoad, InflightEntry, LoadedState, QueuedMessage, SessionBase, SessionRecord,
    StoredMessage, WillRecord,
};
use crate::writer::Writer;

/// Everything read from the file, before filtering.
#[derive(Debug, Default)]
pub(crate) struct RawState {
    pub sessions: Vec<SessionRecord>,
    pub queues: BTreeMap<String, Vec<QueuedMessage>>,
    pub sent_limits: BTreeMap<String, u64>,
    pub retained: Vec<StoredMessage>,
    pub wills: BTreeMap<String, WillRecord>,
    pub last_commit_unix_ms: Option<u64>,
    /// Clients with in-flight or incoming QoS 2 rows but no session row.
    pub orphans: BTreeSet<String>,
    /// Queue numbers with entries but no `queues` row (only in a hand-edited file), with
    /// their entry counts.
    pub orphan_queues: BTreeMap<u64, u64>,
}

fn decode<T: DeserializeOwned>(path: &Path, table: &str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| {
        StoreError::corrupt(
            path,
            std::io::Error::other(format!("undecodable record in table `{table}`: {e}")),
        )
    })
}

/// Reads and decodes every record (also used by `check`).
pub(crate) fn read_all(db: &Database, path: &Path) -> Result<RawState, StoreError> {
    read_all_inner(db, path).map_err(|e| match e {
        ReadError::Store(e) => e,
        ReadError::Redb(e) => StoreError::corrupt(path, e),
    })
}

enum ReadError {
    Store(StoreError),
    Redb(DbError),
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        ReadError::Store(e)
    }
}

impl<E: Into<redb::Error>> From<E> for ReadError {
    fn from(e: E) -> Self {
        ReadError::Redb(DbError::from(e))
    }
}

fn read_all_inner(db: &Database, path: &Path) -> Result<RawState, ReadError> {
    let txn = db.begin_read()?;
    let mut raw = RawState::default();

    let mut inflight: BTreeMap<String, Vec<InflightEntry>> = BTreeMap::new();
    for row in txn.open_table(INFLIGHT)?.iter()? {
        let (k, v) = row?;
        let (client, _) = k.value();
        let entry: InflightEntry = decode(path, "inflight", v.value())?;
        inflight.entry(client.to_owned()).or_default().push(entry);
    }
    let mut incoming: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for row in txn.open_table(INCOMING)?.iter()? {
        let (k, _) = row?;
        let (client, pid) = k.value();
        incoming.entry(client.to_owned()).or_default().push(pid);
    }
    for row in txn.open_table(SESSIONS)?.iter()? {
        let (k, v) = row?;
        let client = k.value();
        let base: SessionBase = decode(path, "sessions", v.value())?;
        raw.sessions.push(SessionRecord {
            client_id: client.to_owned(),
            session_expiry_interval_secs: base.session_expiry_interval_secs,
            disconnected_at_unix_ms: base.disconnected_at_unix_ms,
            protocol_version: base.protocol_version,
            subscriptions: base.subscriptions,
            inflight: inflight.remove(client).unwrap_or_default(),
            incoming_qos2: incoming.remove(client).unwrap_or_default(),
        });
    }
    raw.orphans.extend(inflight.into_keys());
    raw.orphans.extend(incoming.into_keys());
    // Absent in a format-1 file opened read-only (`check`): no entry was sent.
    match txn.open_table(QUEUE_SENT) {
        Ok(table) => {
            for row in table.iter()? {
                let (k, v) = row?;
                raw.sent_limits.insert(k.value().to_owned(), v.value());
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }

    let format = txn
        .open_table(META)?
        .get(META_FORMAT)?
        .map_or(0, |v| v.value());
    if format >= FORMAT_NUMBERED_QUEUES {
        let mut clients: BTreeMap<u64, String> = BTreeMap::new();
        for row in txn.open_table(QUEUES)?.iter()? {
            let (k, v) = row?;
            clients.insert(v.value().0, k.value().to_owned());
        }
        // Entries come in (queue number, sequence) order: one queue after the other.
        let mut current: Option<(u64, Option<&mut Vec<QueuedMessage>>)> = None;
        for row in txn.open_table(QUEUE_ENTRIES)?.iter()? {
            let (k, v) = row?;
            let (id, seq) = k.value();
            if current.as_ref().is_none_or(|(c, _)| *c != id) {
                let queue = clients
                    .get(&id)
                    .map(|client| raw.queues.entry(client.clone()).or_default());
                current = Some((id, queue));
            }
            match current.as_mut().and_then(|(_, q)| q.as_mut()) {
                Some(queue) => {
                    let message: StoredMessage = decode(path, "queue_entries", v.value())?;
                    queue.push(QueuedMessage { seq, message });
                }
                None => *raw.orphan_queues.entry(id).or_default() += 1,
            }
        }
    } else {
        // Formats 1-2, opened read-only by the tools.
        for row in txn.open_table(LEGACY_QUEUE)?.iter()? {
            let (k, v) = row?;
            let (client, seq) = k.value();
            let message: StoredMessage = decode(path, "queue", v.value())?;
            raw.queues
                .entry(client.to_owned())
                .or_default()
                .push(QueuedMessage { seq, message });
        }
    }
    for row in txn.open_table(RETAINED)?.iter()? {
        let (_, v) = row?;
        raw.retained.push(decode(path, "retained", v.value())?);
    }
    for row in txn.open_table(WILLS)?.iter()? {
        let (k, v) = row?;
        let will: WillRecord = decode(path, "wills", v.value())?;
        raw.wills.insert(k.value().to_owned(), will);
    }
    raw.last_commit_unix_ms = txn
        .open_table(META)?
        .get(META_LAST_COMMIT)?
        .map(|v| v.value());
    Ok(raw)
}

/// Splits what is live from what expired at `now`, and builds the batch deleting the latter.
pub(crate) fn filter_expired(raw: RawState, now_unix_ms: u64) -> (LoadedState, Batch) {
    let mut cleanup = Batch::new();
    let mut dropped = DroppedAtLoad::default();
    let fallback = raw.last_commit_unix_ms.unwrap_or(now_unix_ms);

    let mut sessions = Vec::with_capacity(raw.sessions.len());
    let mut deleted: BTreeSet<String> = raw.orphans.clone();
    for s in raw.sessions {
        if s.is_expired(now_unix_ms, fallback) {
            dropped.sessions += 1;
            cleanup.delete_session(&s.client_id);
            deleted.insert(s.client_id);
        } else {
            sessions.push(s);
        }
    }
    for client in &raw.orphans {
        cleanup.delete_session(client);
    }
    for (&id, &entries) in &raw.orphan_queues {
        dropped.queued += entries;
        cleanup.purge_queue(id);
    }
    let live: BTreeSet<&str> = sessions.iter().map(|s| s.client_id.as_str()).collect();
    let mut sent_limits = BTreeMap::new();
    for (client, limit) in raw.sent_limits {
        if live.contains(client.as_str()) {
            sent_limits.insert(client, limit);
        } else if !deleted.contains(&client) && !raw.queues.contains_key(&client) {
            // A sent limit without a session row (or queue); deleting the session clears it.
            deleted.insert(client.clone());
            cleanup.delete_session(&client);
        }
    }

    let mut queues = BTreeMap::new();
    for (client, entries) in raw.queues {
        if !live.contains(client.as_str()) {
            dropped.queued += entries.len() as u64;
            if !deleted.contains(&client) {
                // A queue without a session row; deleting the session clears it.
                cleanup.delete_session(&client);
            }
            continue;
        }
        let sent_below = sent_limits.get(&client).copied().unwrap_or(0);
        let mut kept = Vec::with_capacity(entries.len());
        for q in entries {
            // An entry that may have been sent is in flight: its delivery started, so it is
            // completed even if expired [MQTT-3.3.2-5].
            if q.seq >= sent_below && q.message.is_expired(now_unix_ms) {
                dropped.queued += 1;
                cleanup.remove_queued(&client, q.seq);
            } else {
                kept.push(q);
            }
        }
        if !kept.is_empty() {
            queues.insert(client, kept);
        }
    }

    let mut retained = Vec::with_capacity(raw.retained.len());
    for m in raw.retained {
        if m.is_expired(now_unix_ms) {
            dropped.retained += 1;
            cleanup.delete_retained(&m.topic);
        } else {
            retained.push(m);
        }
    }

    let mut wills = BTreeMap::new();
    for (client, w) in raw.wills {
        if w.message.is_expired(now_unix_ms) {
            dropped.wills += 1;
            cleanup.delete_will(&client);
        } else {
            wills.insert(client, w);
        }
    }

    let state = LoadedState {
        sessions,
        queues,
        sent_limits,
        retained,
        wills,
        dropped,
        last_commit_unix_ms: raw.last_commit_unix_ms,
    };
    (state, cleanup)
}

impl Writer {
    /// `Store::load_all` on the writer thread.
    pub(crate) fn load(&mut self, now_unix_ms: u64) -> Result<LoadedState, StoreError> {
        let path = self.path.clone();
        let raw = {
            let db = self.ensure_open()?;
            read_all(db, &path)?
        };
        let (state, cleanup) = filter_expired(raw, now_unix_ms);
        if !cleanup.is_empty() {
            self.commit_now(cleanup)?;
        }
        let d = state.dropped;
        self.stats.expired_sessions.fetch_add(d.sessions, Relaxed);
        self.stats.expired_queued.fetch_add(d.queued, Relaxed);
        self.stats.expired_retained.fetch_add(d.retained, Relaxed);
        self.stats.expired_wills.fetch_add(d.wills, Relaxed);
        if d != DroppedAtLoad::default() {
            tracing::info!(
                sessions = d.sessions,
                queued = d.queued,
                retained = d.retained,
                wills = d.wills,
                "dropped expired state at load"
            );
        }
        Ok(state)
    }
}
