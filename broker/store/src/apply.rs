//! Applying submissions inside one write transaction, with quota pre-checks and exact byte
//! accounting.

use std::collections::HashMap;

use redb::{Table, WriteTransaction};

use crate::batch::Op;
use crate::db::{
    self, Accounts, DbResult, INCOMING, INFLIGHT, META, QUEUE_ENTRIES, QUEUE_SENT, QUEUES,
    QueueMeta, RETAINED, SESSIONS, WILLS,
};
use crate::error::QuotaLimit;

/// The limits a submission is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_store_bytes: u64,
    pub max_messages_per_session: u64,
    pub max_bytes_per_session: u64,
}

/// Every table, opened once per transaction.
pub(crate) struct Tables<'txn> {
    sessions: Table<'txn, &'static str, &'static [u8]>,
    inflight: Table<'txn, (&'static str, u16), &'static [u8]>,
    incoming: Table<'txn, (&'static str, u16), ()>,
    queue: Table<'txn, (u64, u64), &'static [u8]>,
    queues: Table<'txn, &'static str, (u64, u64, u64, u64)>,
    queue_sent: Table<'txn, &'static str, u64>,
    retained: Table<'txn, &'static str, &'static [u8]>,
    wills: Table<'txn, &'static str, &'static [u8]>,
    meta: Table<'txn, &'static str, u64>,
}

impl<'txn> Tables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> DbResult<Self> {
        Ok(Tables {
            sessions: txn.open_table(SESSIONS)?,
            inflight: txn.open_table(INFLIGHT)?,
            incoming: txn.open_table(INCOMING)?,
            queue: txn.open_table(QUEUE_ENTRIES)?,
            queues: txn.open_table(QUEUES)?,
            queue_sent: txn.open_table(QUEUE_SENT)?,
            retained: txn.open_table(RETAINED)?,
            wills: txn.open_table(WILLS)?,
            meta: txn.open_table(META)?,
        })
    }

    /// Persists the counters that changed; call once before commit.
    pub(crate) fn flush_accounts(&mut self, acc: &mut Accounts, now_unix_ms: u64) -> DbResult<()> {
        for client in acc.dirty.drain() {
            match acc.queues.get(&client) {
                Some(m) => {
                    self.queues
                        .insert(client.as_str(), (m.id, m.next_seq, m.count, m.bytes))?;
                }
                None => {
                    self.queues.remove(client.as_str())?;
                }
            }
        }
        self.meta.insert(db::META_BYTES, acc.bytes)?;
        self.meta.insert(db::META_SESSIONS, acc.sessions)?;
        self.meta.insert(db::META_RETAINED, acc.retained)?;
        self.meta.insert(db::META_WILLS, acc.wills)?;
        self.meta.insert(db::META_QUEUED, acc.queued)?;
        self.meta.insert(db::META_NEXT_QUEUE, acc.next_queue)?;
        self.meta.insert(db::META_LAST_COMMIT, now_unix_ms)?;
        Ok(())
    }
}

/// Refuses a submission that would break a limit, before anything of it is written.
/// Counts everything it adds and nothing it removes (conservative).
pub(crate) fn precheck(ops: &[Op], acc: &Accounts, limits: &Limits) -> Result<(), QuotaLimit> {
    let added: u64 = ops.iter().map(Op::added_bytes).sum();
    if acc.bytes.saturating_add(added) > limits.max_store_bytes {
        return Err(QuotaLimit::StoreBytes);
    }
    let within = |client: &str, count: u64, bytes: u64| {
        let m = acc.queues.get(client).copied().unwrap_or_default();
        if m.count + count > limits.max_messages_per_session {
            Err(QuotaLimit::SessionMessages)
        } else if m.bytes + bytes > limits.max_bytes_per_session {
            Err(QuotaLimit::SessionBytes)
        } else {
            Ok(())
        }
    };
    // Fast path: a batch with a single strict enqueue (the common publish) needs no map.
    if let [
        op @ Op::Enqueue {
            client,
            drop_if_full: false,
            ..
        },
    ] = ops
    {
        return within(client, 1, op.added_bytes());
    }
    let mut per_client: HashMap<&str, (u64, u64)> = HashMap::new();
    for op in ops {
        if let Op::Enqueue {
            client,
            drop_if_full: false,
            ..
        } = op
        {
            let e = per_client.entry(&**client).or_default();
            e.0 += 1;
            e.1 += op.added_bytes();
        }
    }
    for (client, (count, bytes)) in per_client {
        within(client, count, bytes)?;
    }
    Ok(())
}

/// Logical bytes of a row keyed by `client` (quotas and the `bytes` gauge). A queue entry
/// counts its client id plus 8, as in formats 1-2 where the id was its key: the counts of an
/// upgraded file stay exact, and a per-session quota does not depend on the key layout.
fn key_bytes(client: &str, suffix: usize) -> u64 {
    (client.len() + suffix) as u64
}

/// What applying one submission produced.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Sequence numbers of its enqueues (`None` = skipped, queue full).
    pub seqs: Vec<Option<u64>>,
    /// Lenient enqueues skipped because the session's queue was full.
    pub dropped_full: u64,
}

/// Applies one (pre-checked) submission. An error aborts the whole transaction.
pub(crate) fn apply(
    t: &mut Tables<'_>,
    acc: &mut Accounts,
    limits: &Limits,
    ops: &[Op],
) -> DbResult<Applied> {
    let mut out = Applied::default();
    for op in ops {
        apply_one(t, acc, limits, op, &mut out)?;
    }
    Ok(out)
}

fn apply_one(
    t: &mut Tables<'_>,
    acc: &mut Accounts,
    limits: &Limits,
    op: &Op,
    out: &mut Applied,
) -> DbResult<()> {
    match op {
        Op::PutSession {
            client,
            base,
            inflight,
            incoming,
        } => {
            let c = &**client;
            match t.sessions.insert(c, base.as_ref())? {
                Some(old) => acc.bytes -= key_bytes(c, old.value().len()),
                None => acc.sessions += 1,
            }
            acc.bytes += key_bytes(c, base.len());
            clear_inflight(t, acc, c)?;
            clear_incoming(t, acc, c)?;
            for (pid, value) in inflight {
                set_inflight(t, acc, c, *pid, value)?;
            }
            for pid in incoming {
                if t.incoming.insert((c, *pid), ())?.is_none() {
                    acc.bytes += key_bytes(c, 2);
                }
            }
        }
        Op::DeleteSession { client } => delete_session(t, acc, client)?,
        Op::Enqueue {
            client,
            value,
            drop_if_full,
        } => {
            let c = &**client;
            let size = key_bytes(c, 8 + value.len());
            if !acc.queues.contains_key(c) {
                let id = acc.next_queue;
                acc.next_queue += 1;
                let meta = QueueMeta {
                    id,
                    ..QueueMeta::default()
                };
                acc.queues.insert(c.to_owned(), meta);
            }
            // Cannot fail: the entry was inserted just above when missing.
            let m = acc.queues.get_mut(c).expect("queue meta present");
            if *drop_if_full
                && (m.count >= limits.max_messages_per_session
                    || m.bytes + size > limits.max_bytes_per_session)
            {
                out.seqs.push(None);
                out.dropped_full += 1;
                return Ok(());
            }
            let seq = m.next_seq;
            m.next_seq += 1;
            if let Some(old) = t.queue.insert((m.id, seq), value.as_ref())? {
                // Only after a hand-edited file; keep the accounts exact anyway.
                let old_size = key_bytes(c, 8 + old.value().len());
                m.count -= 1;
                m.bytes -= old_size;
                acc.queued -= 1;
                acc.bytes -= old_size;
            }
            m.count += 1;
            m.bytes += size;
            acc.queued += 1;
            acc.bytes += size;
            if !acc.dirty.contains(c) {
                acc.dirty.insert(c.to_owned());
            }
            out.seqs.push(Some(seq));
        }
        Op::DequeueUpto { client, seq } => {
            remove_queue_range(t, acc, client, 0, *seq)?;
        }
        Op::RemoveQueued { client, seq } => {
            remove_queue_range(t, acc, client, *seq, *seq)?;
        }
        Op::SetInflight {
            client,
            packet_id,
            value,
        } => set_inflight(t, acc, client, *packet_id, value)?,
        Op::AckInflight { client, packet_id } => {
            if let Some(old) = t.inflight.remove((&**client, *packet_id))? {
                acc.bytes -= key_bytes(client, 2 + old.value().len());
            }
        }
        Op::SetIncoming { client, packet_id } => {
            if t.incoming.insert((&**client, *packet_id), ())?.is_none() {
                acc.bytes += key_bytes(client, 2);
            }
        }
        Op::ReleaseIncoming { client, packet_id } => {
            if t.incoming.remove((&**client, *packet_id))?.is_some() {
                acc.bytes -= key_bytes(client, 2);
            }
        }
        Op::SetSentLimit { client, limit } => {
            if t.queue_sent.insert(&**client, *limit)?.is_none() {
                acc.bytes += key_bytes(client, 8);
            }
        }
        Op::SetRetained { topic, value } => {
            match t.retained.insert(topic.as_str(), value.as_ref())? {
                Some(old) => acc.bytes -= key_bytes(topic, old.value().len()),
                None => acc.retained += 1,
            }
            acc.bytes += key_bytes(topic, value.len());
        }
        Op::DeleteRetained { topic } => {
            if let Some(old) = t.retained.remove(topic.as_str())? {
                acc.bytes -= key_bytes(topic, old.value().len());
                acc.retained -= 1;
            }
        }
        Op::PutWill { client, value } => {
            match t.wills.insert(&**client, value.as_ref())? {
                Some(old) => acc.bytes -= key_bytes(client, old.value().len()),
                None => acc.wills += 1,
            }
            acc.bytes += key_bytes(client, value.len());
        }
        Op::DeleteWill { client } => {
            if let Some(old) = t.wills.remove(&**client)? {
                acc.bytes -= key_bytes(client, old.value().len());
                acc.wills -= 1;
            }
        }
        Op::PurgeQueue { id } => {
            // Rows no `queues` row accounts for: nothing to subtract.
            for row in t
                .queue
                .extract_from_if((*id, 0)..=(*id, u64::MAX), |_, _| true)?
            {
                row?;
            }
        }
        Op::Touch => {}
    }
    Ok(())
}

fn set_inflight(
    t: &mut Tables<'_>,
    acc: &mut Accounts,
    client: &str,
    packet_id: u16,
    value: &[u8],
) -> DbResult<()> {
    if let Some(old) = t.inflight.insert((client, packet_id), value)? {
        acc.bytes -= key_bytes(client, 2 + old.value().len());
    }
    acc.bytes += key_bytes(client, 2 + value.len());
    Ok(())
}

fn clear_inflight(t: &mut Tables<'_>, acc: &mut Accounts, client: &str) -> DbResult<()> {
    let mut freed = 0;
    for row in t
        .inflight
        .extract_from_if((client, 0u16)..=(client, u16::MAX), |_, _| true)?
    {
        let (_, v) = row?;
        freed += key_bytes(client, 2 + v.value().len());
    }
    acc.bytes -= freed;
    Ok(())
}

fn clear_incoming(t: &mut Tables<'_>, acc: &mut Accounts, client: &str) -> DbResult<()> {
    let mut freed = 0;
    for row in t
        .incoming
        .extract_from_if((client, 0u16)..=(client, u16::MAX), |_, _| true)?
    {
        row?;
        freed += key_bytes(client, 2);
    }
    acc.bytes -= freed;
    Ok(())
}

fn remove_queue_range(
    t: &mut Tables<'_>,
    acc: &mut Accounts,
    client: &str,
    from: u64,
    to: u64,
) -> DbResult<()> {
    if from > to {
        return Ok(());
    }
    let Some(m) = acc.queues.get_mut(client) else {
        return Ok(());
    };
    if m.count == 0 {
        return Ok(());
    }
    let (mut count, mut bytes) = (0u64, 0u64);
    if from == to {
        // One entry (a PUBACK, a dropped message): a point delete, no range scan.
        if let Some(v) = t.queue.remove((m.id, from))? {
            count = 1;
            bytes = key_bytes(client, 8 + v.value().len());
        }
    } else {
        for row in t
            .queue
            .extract_from_if((m.id, from)..=(m.id, to), |_, _| true)?
        {
            let (_, v) = row?;
            count += 1;
            bytes += key_bytes(client, 8 + v.value().len());
        }
    }
    if count == 0 {
        return Ok(());
    }
    m.count -= count;
    m.bytes -= bytes;
    acc.queued -= count;
    acc.bytes -= bytes;
    if !acc.dirty.contains(client) {
        acc.dirty.insert(client.to_owned());
    }
    Ok(())
}

fn delete_session(t: &mut Tables<'_>, acc: &mut Accounts, client: &str) -> DbResult<()> {
    if let Some(old) = t.sessions.remove(client)? {
        acc.bytes -= key_bytes(client, old.value().len());
        acc.sessions -= 1;
    }
    clear_inflight(t, acc, client)?;
    clear_incoming(t, acc, client)?;
    remove_queue_range(t, acc, client, 0, u64::MAX)?;
    if t.queue_sent.remove(client)?.is_some() {
        acc.bytes -= key_bytes(client, 8);
    }
    if acc.queues.remove(client).is_some() {
        acc.dirty.insert(client.to_owned());
    }
    Ok(())
}
