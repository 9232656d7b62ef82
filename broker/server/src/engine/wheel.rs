//! The connection deadlines of one I/O thread ([`ConnTimers`]): a hashed timing wheel with
//! lazy removal.
//!
//! A connection arms a deadline at accept and again whenever it moves earlier, or much
//! later ([`ConnTimers::replaces`]; see `ThreadCtx::arm_conn_timer`); the thread's 100 ms
//! tick fires the due ones. Kept in a `BTreeSet` of ~10 000 entries, each arm was an ordered
//! insert (~400-500 instructions) and each close a removal. Here an arm pushes the entry onto
//! the slot of its deadline's tick (a few instructions), and nothing is removed when a
//! deadline is replaced or its connection closes: the entry goes *stale*, and the caller's `live` check (the connection still open,
//! its armed deadline still this one) drops it when its slot is next swept, at the latest one
//! turn of the wheel later. So is a deadline more than a turn ahead: its slot is swept every
//! turn, and the entry stays until a sweep finds it due.
//!
//! Limits: an arm that finds more than four entries per open connection (or twice the
//! entries left by the last compaction, if more) plus [`COMPACT_SLACK`] first compacts the
//! whole wheel (drops every stale entry: O(entries), after at least as many arms). A
//! connection normally holds one or two (its CONNECT deadline, stale once the keep-alive
//! replaced it, until its sweep 10 s later), so connecting clients alone never trigger it:
//! a compaction checks every entry against the connection table, which is cache-missing
//! work. Slots swept empty give their memory back. The wheel itself is [`WHEEL_SLOTS`]
//! empty vectors (24 KiB per thread).

use std::time::Duration;

/// A connection timer entry: (deadline in nanoseconds since the thread's epoch, connection
/// id). 16 B: each idle connection has one.
pub type ConnTimerKey = (u64, u64);

/// Slots of the wheel, one per tick: a turn is `WHEEL_SLOTS` ticks (102.4 s of 100 ms
/// ticks), longer than the usual keep-alive (60 s, due after 90 s), so most entries are
/// swept once.
pub const WHEEL_SLOTS: usize = 1024;

/// Entries tolerated beyond four per open connection before an arm compacts the wheel
/// (1 MiB of entries).
pub const COMPACT_SLACK: usize = 65_536;

/// A slot keeps at most this many free places after a sweep (more are given back).
const KEEP_ROOM: usize = 16;

/// The deadlines of one thread's connections (see the module documentation).
pub struct ConnTimers {
    /// Entries, in the slot of their deadline's tick (modulo [`WHEEL_SLOTS`]), unordered.
    slots: Box<[Vec<ConnTimerKey>]>,
    /// Length of a tick in nanoseconds.
    tick: u64,
    /// The earliest tick not swept for good: every entry due before it has fired. An entry
    /// due earlier than this is put in this tick's slot.
    next: u64,
    /// Entries in all slots.
    len: usize,
    /// Entries the last compaction left.
    compacted: usize,
}

impl std::fmt::Debug for ConnTimers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTimers")
            .field("len", &self.len)
            .field("next", &self.next)
            .finish()
    }
}

impl ConnTimers {
    /// An empty wheel of `tick`-long slots (nanosecond deadlines).
    pub fn new(tick: Duration) -> Self {
        ConnTimers {
            slots: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
            tick: u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX).max(1),
            next: 0,
            len: 0,
            compacted: 0,
        }
    }

    /// Entries held, stale ones included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// The slot of tick `tick`.
    fn slot(tick: u64) -> usize {
        // Lossless: the remainder is below `WHEEL_SLOTS`.
        (tick % WHEEL_SLOTS as u64) as usize
    }

    /// Whether a connection whose armed deadline is `armed` should arm `at` instead (both in
    /// nanoseconds): always when `at` is earlier; when it is later, only if `armed` comes
    /// before the midpoint between the last sweep (the tick's start, a stand-in for now)
    /// and `at`. So the keep-alive armed after a CONNECT replaces the CONNECT deadline
    /// (10 s) instead of waking the connection then, while a keep-alive pushed back by
    /// every packet is re-armed at most once per half its interval; a deadline kept fires
    /// early once and the connection arms the later one then.
    pub fn replaces(&self, armed: u64, at: u64) -> bool {
        if at < armed {
            return true;
        }
        let now = self.next.saturating_mul(self.tick).min(at);
        armed < now + (at - now) / 2
    }

    /// Adds `key`, with `open` connections on the thread. When the wheel holds more than its
    /// limit, first drops every entry for which `live` is false (see the module
    /// documentation).
    pub fn insert(
        &mut self,
        key: ConnTimerKey,
        open: usize,
        live: impl FnMut(ConnTimerKey) -> bool,
    ) {
        let limit = open.saturating_mul(4).max(self.compacted.saturating_mul(2));
        if self.len >= limit.saturating_add(COMPACT_SLACK) {
            self.compact(live);
        }
        let tick = (key.0 / self.tick).max(self.next);
        self.slots[Self::slot(tick)].push(key);
        self.len += 1;
    }

    /// Sweeps the slots of the ticks up to the one holding `now`: entries for which `live` is
    /// false are dropped, live ones due by `now` are removed and their connections pushed to
    /// `due` (in no particular order).
    pub fn expire(
        &mut self,
        now: u64,
        mut live: impl FnMut(ConnTimerKey) -> bool,
        due: &mut Vec<u64>,
    ) {
        let current = now / self.tick;
        if current < self.next {
            return;
        }
        // A gap longer than a turn sweeps every slot once.
        let ticks = (current - self.next + 1).min(WHEEL_SLOTS as u64);
        for tick in self.next..self.next + ticks {
            let slot = &mut self.slots[Self::slot(tick)];
            let before = slot.len();
            slot.retain(|&key| {
                if !live(key) {
                    false
                } else if key.0 <= now {
                    due.push(key.1);
                    false
                } else {
                    true
                }
            });
            self.len -= before - slot.len();
            give_back_room(slot);
        }
        // The current tick is swept again: entries later in it are not due yet.
        self.next = current;
    }

    /// Drops every entry for which `live` is false.
    pub fn compact(&mut self, mut live: impl FnMut(ConnTimerKey) -> bool) {
        self.len = 0;
        for slot in &mut self.slots {
            slot.retain(|&key| live(key));
            give_back_room(slot);
            self.len += slot.len();
        }
        self.compacted = self.len;
    }
}

/// Frees most of the room a slot's burst left (a slot is filled during a tick or so, then
/// swept a turn later).
fn give_back_room(slot: &mut Vec<ConnTimerKey>) {
    if slot.capacity() > 2 * slot.len() + KEEP_ROOM {
        if slot.is_empty() {
            *slot = Vec::new();
        } else {
            slot.shrink_to(slot.len() + slot.len() / 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::{COMPACT_SLACK, ConnTimerKey, ConnTimers, WHEEL_SLOTS};

    const TICK: u64 = 100;

    /// A wheel of 100 ns ticks and the deadline each connection has armed.
    fn wheel() -> (ConnTimers, HashMap<u64, u64>) {
        (ConnTimers::new(Duration::from_nanos(TICK)), HashMap::new())
    }

    fn arm(w: &mut ConnTimers, armed: &mut HashMap<u64, u64>, at: u64, conn: u64) {
        armed.insert(conn, at);
        let open = armed.len();
        w.insert((at, conn), open, |(at, c)| armed.get(&c) == Some(&at));
    }

    /// Fires what is due at `now` (sorted), forgetting the fired connections' deadlines.
    fn fire(w: &mut ConnTimers, armed: &mut HashMap<u64, u64>, now: u64) -> Vec<u64> {
        let mut due = Vec::new();
        w.expire(now, |(at, c)| armed.get(&c) == Some(&at), &mut due);
        for c in &due {
            armed.remove(c);
        }
        due.sort_unstable();
        due
    }

    #[test]
    fn deadlines_fire_once_due_and_not_before() {
        let (mut w, mut armed) = wheel();
        arm(&mut w, &mut armed, 250, 1);
        arm(&mut w, &mut armed, 120, 2);
        arm(&mut w, &mut armed, 299, 3);
        assert_eq!(fire(&mut w, &mut armed, 119), Vec::<u64>::new());
        assert_eq!(fire(&mut w, &mut armed, 120), vec![2]);
        // Tick 2 holds 250 and 299: swept at 260 (only 250 due), again at 300.
        assert_eq!(fire(&mut w, &mut armed, 260), vec![1]);
        assert_eq!(fire(&mut w, &mut armed, 298), Vec::<u64>::new());
        assert_eq!(fire(&mut w, &mut armed, 300), vec![3]);
        assert_eq!(w.len(), 0);
        // Nothing fires twice.
        assert_eq!(fire(&mut w, &mut armed, 10_000), Vec::<u64>::new());
    }

    #[test]
    fn a_past_deadline_fires_at_the_next_sweep() {
        let (mut w, mut armed) = wheel();
        assert_eq!(fire(&mut w, &mut armed, 1_000), Vec::<u64>::new());
        arm(&mut w, &mut armed, 5, 7);
        assert_eq!(fire(&mut w, &mut armed, 1_001), vec![7]);
    }

    #[test]
    fn a_deadline_turns_ahead_waits_for_its_turn() {
        let (mut w, mut armed) = wheel();
        let turn = WHEEL_SLOTS as u64 * TICK;
        arm(&mut w, &mut armed, 3 * turn + 150, 9);
        for now in (0..3 * turn + 150).step_by(TICK as usize) {
            assert_eq!(fire(&mut w, &mut armed, now), Vec::<u64>::new(), "at {now}");
        }
        assert_eq!(fire(&mut w, &mut armed, 3 * turn + 150), vec![9]);
    }

    #[test]
    fn a_gap_longer_than_a_turn_fires_everything_due() {
        let (mut w, mut armed) = wheel();
        let turn = WHEEL_SLOTS as u64 * TICK;
        for c in 0..50 {
            arm(&mut w, &mut armed, c * 997 % (2 * turn), c);
        }
        arm(&mut w, &mut armed, 5 * turn, 99);
        assert_eq!(
            fire(&mut w, &mut armed, 2 * turn),
            (0..50).collect::<Vec<_>>()
        );
        assert_eq!(fire(&mut w, &mut armed, 5 * turn), vec![99]);
    }

    #[test]
    fn replaced_and_closed_entries_go_stale_and_never_fire() {
        let (mut w, mut armed) = wheel();
        arm(&mut w, &mut armed, 500, 1);
        arm(&mut w, &mut armed, 300, 1); // moved earlier: the 500 entry is stale
        arm(&mut w, &mut armed, 400, 2);
        armed.remove(&2); // closed
        assert_eq!(w.len(), 3);
        assert_eq!(fire(&mut w, &mut armed, 450), vec![1]);
        // Swept: 2's entry is gone; 1's stale one goes at its slot's sweep.
        assert_eq!(w.len(), 1);
        assert_eq!(fire(&mut w, &mut armed, 600), Vec::<u64>::new());
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn stale_entries_stay_bounded_by_compaction() {
        let (mut w, mut armed) = wheel();
        let far = 10 * WHEEL_SLOTS as u64 * TICK;
        // 100 connections open, each re-arming an earlier deadline over and over (every
        // replaced entry stays, far ahead): compaction keeps the wheel near its live size.
        for round in 0..1_000u64 {
            for c in 0..100 {
                arm(&mut w, &mut armed, far - round, c);
            }
            assert!(
                w.len() <= 4 * 100 + COMPACT_SLACK + 1,
                "{} entries",
                w.len()
            );
        }
        assert!(w.compacted > 0, "compacted at least once");
        w.compact(|(at, c): ConnTimerKey| armed.get(&c) == Some(&at));
        assert_eq!(w.len(), 100);
        let fired = fire(&mut w, &mut armed, far);
        assert_eq!(fired, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_later_deadline_replaces_one_due_before_half_its_time() {
        let (mut w, mut armed) = wheel();
        fire(&mut w, &mut armed, 1_000); // the last sweep: tick 10, 1 000 ns
        assert!(w.replaces(5_000, 4_000), "earlier");
        // Due at 1 400, the new one at 20 000: halfway is 10 500.
        assert!(w.replaces(1_400, 20_000));
        assert!(!w.replaces(12_000, 20_000));
        assert!(!w.replaces(20_000, 20_000));
        // One already due is replaced by any later one.
        assert!(w.replaces(900, 1_100));
        assert!(!w.replaces(1_100, 1_100));
    }

    #[test]
    fn a_swept_burst_gives_its_memory_back() {
        let (mut w, mut armed) = wheel();
        for c in 0..10_000 {
            arm(&mut w, &mut armed, 150, c);
        }
        assert!(w.slots[1].capacity() >= 10_000);
        assert_eq!(fire(&mut w, &mut armed, 200).len(), 10_000);
        assert_eq!(w.slots[1].capacity(), 0);
    }
}
