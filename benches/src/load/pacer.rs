//! Open-loop pacing: one thread per generator worker writes its publishers' messages at their
//! scheduled times, with a high-resolution timer instead of the tokio runtime's 1 ms one.
//!
//! The run's rate is one uniform stream: message `g` of the whole run is due at
//! `origin + g / rate`, and publisher `j` of `N` sends messages `g = k * N + j` (its `k`-th
//! message). At 50k msgs/s over 50 publishers a message is due every 20 us, each publisher
//! once per millisecond, staggered: the broker sees a stream, not a burst every tick.
//!
//! The pacer owns a duplicate of each publisher's socket for writing (non-blocking writes;
//! the tokio task keeps the reading side for the acknowledgements). It sleeps with
//! `clock_nanosleep` to the next due time and writes what is due. Under `SCHED_FIFO` (the
//! open-loop cases of `halyard-compare`) timer slack is 0 and it wakes a few microseconds
//! late; it runs one real-time priority above the process so that it preempts the worker's
//! own runtime thread (subscribers, acknowledgements) on a shared core. Without real-time
//! scheduling it asks for a timer slack of 1 ns.
//!
//! Latency stays counted from the scheduled time (no coordinated omission): a message that
//! cannot leave on time (the pacer was late, the in-flight limit or the socket was full) is
//! stamped with its scheduled time and its lateness.

use std::io::Write as _;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::{Buf as _, BytesMut};

use super::publisher::Encoder;
use super::{LoadError, SETUP_TIMEOUT, Shared, phase};
use crate::latency::Latency;

/// Longest single sleep: the pacer looks at the run phase at least this often.
const MAX_SLEEP: Duration = Duration::from_millis(20);
/// A publisher with due messages that cannot send (in-flight limit, full socket) is retried
/// after this long.
const BLOCKED_RETRY_NS: u64 = 200_000;
/// Most bytes a publisher keeps encoded but not yet taken by its socket; past it, due
/// messages wait (and count their lateness).
pub const MAX_PENDING_BYTES: usize = 256 * 1024;
/// Most messages one publisher encodes per wake-up.
const MAX_PER_WAKE: u64 = super::MAX_BATCH as u64;

/// When each message of an open-loop run is due.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    origin_ns: u64,
    period_ns: f64,
    publishers: u64,
}

impl Schedule {
    /// `rate` messages per second in total over `publishers` publishers, the first due at
    /// `origin_ns` (on the run's clock).
    pub fn new(origin_ns: u64, rate: f64, publishers: usize) -> Self {
        Schedule {
            origin_ns,
            period_ns: 1e9 / rate,
            publishers: publishers.max(1) as u64,
        }
    }

    /// When publisher `j`'s `k`-th message (0-based) is due, ns on the run's clock.
    pub fn at(&self, j: u32, k: u64) -> u64 {
        let g = k
            .saturating_mul(self.publishers)
            .saturating_add(u64::from(j));
        self.origin_ns + (g as f64 * self.period_ns) as u64
    }
}

/// One publisher as the pacer sees it: where to write, what to encode, and its progress.
pub(super) struct Paced {
    /// Index of the publisher within the run.
    pub id: u32,
    /// A duplicate of the publisher's socket, non-blocking.
    pub stream: TcpStream,
    /// Encodes and accounts its messages.
    pub enc: Encoder,
}

struct Slot {
    p: Paced,
    /// Index of the next message to send.
    k: u64,
    /// When it is due.
    next_ns: u64,
    /// Encoded bytes not yet taken by the socket.
    pending: BytesMut,
    /// A write failed: the publisher is out of the run.
    dead: bool,
}

/// The pacer of one worker: collects `expected` publishers from `rx`, then sends on the
/// schedule from WARMUP until DRAIN, waking at most once per `gap`. Records send lateness
/// during MEASURE in `shared.send_lag`.
pub(super) fn run(
    shared: &Shared,
    rx: &Receiver<Paced>,
    expected: usize,
    rate: f64,
    gap: Duration,
) {
    let Some(mut slots) = collect(shared, rx, expected) else {
        return;
    };
    if !wait_phase(shared, phase::WARMUP) {
        return;
    }
    tune_thread();
    let sched = Schedule::new(
        shared.origin_ns.load(Ordering::Acquire),
        rate,
        shared.pubs.len(),
    );
    for s in &mut slots {
        s.next_ns = sched.at(s.p.id, 0);
    }
    let mut lag = Latency::new();
    let clock = shared.clock;
    // Monotonic clock reading of the run clock's origin, for absolute sleeps.
    let mono_origin = mono_ns().saturating_sub(clock.now_ns());
    loop {
        let ph = shared.phase();
        if ph >= phase::DRAIN {
            break;
        }
        let woke = clock.now_ns();
        // One clock reading per wake-up, taken again only after a write (which takes
        // microseconds): reading it per publisher cost ~5 % of the generator's CPU.
        let mut now = woke;
        let mut wake = u64::MAX;
        for s in slots.iter_mut().filter(|s| !s.dead) {
            match step(s, &sched, now, ph, &mut lag) {
                Ok((next, wrote)) => {
                    wake = wake.min(next);
                    if wrote {
                        now = clock.now_ns();
                    }
                }
                Err(e) => {
                    s.dead = true;
                    if shared.phase() < phase::DRAIN {
                        shared.fail(&format!("publisher {}", s.p.id), &e);
                    }
                }
            }
        }
        let cap = clock.now_ns() + MAX_SLEEP.as_nanos() as u64;
        let gap_ns = u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX);
        sleep_until_mono(mono_origin + wake.max(woke.saturating_add(gap_ns)).min(cap));
    }
    if lag.count() > 0 {
        // A poisoned lock only means another thread panicked while merging; keep going.
        let mut all = shared.send_lag.lock().unwrap_or_else(|p| p.into_inner());
        all.merge(&lag);
    }
}

/// Sends what is due for one publisher: first what its socket did not take, then new
/// messages up to the in-flight limit, [`MAX_PENDING_BYTES`] and [`MAX_PER_WAKE`]. Returns
/// when to look at it again (ns on the run's clock) and whether it wrote.
fn step(
    s: &mut Slot,
    sched: &Schedule,
    now: u64,
    ph: u8,
    lag: &mut Latency,
) -> Result<(u64, bool), LoadError> {
    let flushed = !s.pending.is_empty();
    if flushed {
        flush(s)?;
    }
    if s.next_ns > now {
        return Ok((retry_or(s, now, s.next_ns), flushed));
    }
    let mut n = 0u64;
    while n < MAX_PER_WAKE && sched.at(s.p.id, s.k + n) <= now {
        n += 1;
    }
    let room = if s.pending.len() >= MAX_PENDING_BYTES {
        0
    } else {
        s.p.enc.room() as u64
    };
    let n = n.min(room);
    if n == 0 {
        // Due but blocked by the in-flight limit or a full socket.
        return Ok((now + BLOCKED_RETRY_NS, flushed));
    }
    let first = s.k;
    let (id, measure) = (s.p.id, ph == phase::MEASURE);
    s.p.enc.encode(&mut s.pending, n as usize, ph, |i| {
        let t = sched.at(id, first + i);
        let late = now.saturating_sub(t);
        if measure {
            lag.record(late);
        }
        (t, u32::try_from(late).unwrap_or(u32::MAX))
    });
    s.k += n;
    s.next_ns = sched.at(s.p.id, s.k);
    flush(s)?;
    Ok((retry_or(s, now, s.next_ns), true))
}

/// `next`, or sooner when bytes still wait for the socket.
fn retry_or(s: &Slot, now: u64, next: u64) -> u64 {
    if s.pending.is_empty() {
        next
    } else {
        next.min(now + BLOCKED_RETRY_NS)
    }
}

/// Writes as much of the pending bytes as the socket takes without blocking.
fn flush(s: &mut Slot) -> Result<(), LoadError> {
    while !s.pending.is_empty() {
        match (&s.p.stream).write(&s.pending) {
            Ok(0) => return Err(LoadError::Closed),
            Ok(n) => s.pending.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Waits for `expected` publishers (fewer if some failed to connect: their senders are
/// dropped). `None` when the run ended first.
fn collect(shared: &Shared, rx: &Receiver<Paced>, expected: usize) -> Option<Vec<Slot>> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut slots = Vec::with_capacity(expected);
    while slots.len() < expected {
        if shared.phase() >= phase::DRAIN || Instant::now() > deadline {
            return None;
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(p) => slots.push(Slot {
                p,
                k: 0,
                next_ns: 0,
                pending: BytesMut::new(),
                dead: false,
            }),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(slots)
}

/// Waits until the run reaches phase `p`; `false` when it skipped past the publishing phases.
fn wait_phase(shared: &Shared, p: u8) -> bool {
    let deadline = Instant::now() + SETUP_TIMEOUT + Duration::from_secs(3600);
    loop {
        let now = shared.phase();
        if now >= phase::DRAIN {
            return false;
        }
        if now >= p {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Under real-time scheduling, one priority above the process (so that the pacer preempts
/// its worker's runtime thread); otherwise a 1 ns timer slack. Best effort: a refusal only
/// makes the pacing coarser, which the send lag shows.
fn tune_thread() {
    // SAFETY: plain syscalls on the calling thread (pid 0) with a local, initialised
    // `sched_param`; no memory is shared with the kernel beyond the call.
    unsafe {
        let policy = libc::sched_getscheduler(0);
        if policy == libc::SCHED_FIFO || policy == libc::SCHED_RR {
            let mut p = libc::sched_param { sched_priority: 0 };
            if libc::sched_getparam(0, &mut p) == 0 {
                p.sched_priority = (p.sched_priority + 1).min(libc::sched_get_priority_max(policy));
                libc::sched_setscheduler(0, policy, &p);
            }
        } else {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        }
    }
}

/// `CLOCK_MONOTONIC` in ns (the clock `Instant` reads on Linux).
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Sleeps until `CLOCK_MONOTONIC` reaches `t_ns` (returns at once if it has).
fn sleep_until_mono(t_ns: u64) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(t_ns / 1_000_000_000).unwrap_or(libc::time_t::MAX),
        // Below 1e9, so it fits any c_long.
        tv_nsec: (t_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: an absolute sleep on a valid timespec; no remaining-time output is requested.
    // An early return (EINTR) only makes the loop look again.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_run_is_one_uniform_stream() {
        // 50k msgs/s over 50 publishers: one message every 20 us, in publisher order.
        let s = Schedule::new(1_000, 50_000.0, 50);
        let mut merged: Vec<(u64, u32)> = (0..50u32)
            .flat_map(|j| (0..100u64).map(move |k| (s.at(j, k), j)))
            .collect();
        merged.sort_unstable();
        for (g, w) in merged.windows(2).enumerate() {
            assert_eq!(w[1].0 - w[0].0, 20_000, "gap after message {g}");
            assert_eq!(w[1].1, (w[0].1 + 1) % 50);
        }
        assert_eq!(merged[0], (1_000, 0));
    }

    #[test]
    fn each_publisher_keeps_its_own_rate() {
        let s = Schedule::new(0, 5_000.0, 50);
        for j in [0u32, 7, 49] {
            assert_eq!(s.at(j, 0), u64::from(j) * 200_000);
            for k in 0..1000 {
                assert_eq!(s.at(j, k + 1) - s.at(j, k), 10_000_000);
            }
        }
    }

    #[test]
    fn rates_that_do_not_divide_a_second_stay_within_a_nanosecond() {
        let s = Schedule::new(0, 3.0 * 50_000.0 / 7.0, 3);
        let period = 1e9 / (3.0 * 50_000.0 / 7.0);
        for k in [0u64, 1, 1_000, 10_000_000] {
            for j in 0..3u32 {
                let exact = (k * 3 + u64::from(j)) as f64 * period;
                assert!((s.at(j, k) as f64 - exact).abs() <= 1.0);
                assert!(s.at(j, k + 1) > s.at(j, k));
            }
        }
    }

    #[test]
    fn one_publisher_carries_the_whole_rate() {
        let s = Schedule::new(5, 1_000.0, 1);
        assert_eq!(s.at(0, 0), 5);
        assert_eq!(s.at(0, 3), 3_000_005);
    }
}
