//! The benchmark payload: a fixed 24-byte header (send timestamp, sequence number, publisher
//! id, send lag, all little-endian) followed by filler up to the requested size.
//!
//! The timestamp is nanoseconds since the run's [`Clock`] origin: publishers and subscribers
//! live in one process, so one monotonic origin serves both ends.

use std::time::Instant;

/// Bytes taken by the header; the smallest payload the generator accepts.
pub const HEADER_LEN: usize = 24;

/// What a publisher stamps into each payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Send time (open loop: the scheduled send time), ns since the clock origin.
    pub sent_ns: u64,
    /// Per-publisher sequence number, starting at 0 and increasing by one.
    pub seq: u64,
    /// Publisher index within the run.
    pub publisher: u32,
    /// Open loop: how late the message left against `sent_ns` (the generator's own delay),
    /// ns, saturating; 0 in closed loop. `receive - sent_ns - lag_ns` is the latency from
    /// the actual send: the broker and the network, without the generator's pacing.
    pub lag_ns: u32,
}

impl Stamp {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`; returns `false` (and
    /// writes nothing) when `out` is too short.
    pub fn write(&self, out: &mut [u8]) -> bool {
        let Some(h) = out.get_mut(..HEADER_LEN) else {
            return false;
        };
        h[0..8].copy_from_slice(&self.sent_ns.to_le_bytes());
        h[8..16].copy_from_slice(&self.seq.to_le_bytes());
        h[16..20].copy_from_slice(&self.publisher.to_le_bytes());
        h[20..24].copy_from_slice(&self.lag_ns.to_le_bytes());
        true
    }

    /// Reads a header; `None` when the payload is shorter than [`HEADER_LEN`] (not ours).
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let h = payload.get(..HEADER_LEN)?;
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        let mut c = [0u8; 4];
        let mut d = [0u8; 4];
        a.copy_from_slice(&h[0..8]);
        b.copy_from_slice(&h[8..16]);
        c.copy_from_slice(&h[16..20]);
        d.copy_from_slice(&h[20..24]);
        Some(Stamp {
            sent_ns: u64::from_le_bytes(a),
            seq: u64::from_le_bytes(b),
            publisher: u32::from_le_bytes(c),
            lag_ns: u32::from_le_bytes(d),
        })
    }
}

/// The run-wide monotonic time origin.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn start() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds since the origin (saturating at `u64::MAX`, ~584 years).
    pub fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    /// Nanoseconds from the origin to `t` (0 if `t` is earlier).
    pub fn ns_at(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The origin.
    pub fn origin(&self) -> Instant {
        self.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips() {
        let s = Stamp {
            sent_ns: 0x0102_0304_0506_0708,
            seq: u64::MAX - 1,
            publisher: 77,
            lag_ns: 0x0a0b_0c0d,
        };
        let mut buf = vec![0xAAu8; 64];
        assert!(s.write(&mut buf));
        assert_eq!(Stamp::read(&buf), Some(s));
        // The filler after the header is untouched.
        assert!(buf[HEADER_LEN..].iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn short_payloads_are_rejected() {
        let s = Stamp {
            sent_ns: 1,
            seq: 2,
            publisher: 3,
            lag_ns: 4,
        };
        let mut short = [0u8; HEADER_LEN - 1];
        assert!(!s.write(&mut short));
        assert_eq!(short, [0u8; HEADER_LEN - 1]);
        assert_eq!(Stamp::read(&short), None);
        let mut exact = [0u8; HEADER_LEN];
        assert!(s.write(&mut exact));
        assert_eq!(Stamp::read(&exact), Some(s));
    }

    #[test]
    fn clock_is_monotonic_from_origin() {
        let c = Clock::start();
        let a = c.now_ns();
        let b = c.now_ns();
        assert!(b >= a);
        assert_eq!(c.ns_at(c.origin()), 0);
        assert_eq!(c.ns_at(c.origin() - std::time::Duration::from_secs(0)), 0);
    }
}
