//! The I/O thread's periodic tick (connection deadlines, offline-session timers), kept out
//! of compio's timer wheel.
//!
//! compio's runtime checks its timer wheel after every turn of its driver: while the wheel
//! holds any timer it reads the clock and splits the wheel's B-tree (an allocation and a
//! free), about 1 100 instructions per message on io_uring when every message is a turn of
//! its own (benches/RESULTS.md, session 10). The tick was the one timer always there, so it
//! is a periodic `timerfd` polled through the runtime like a socket instead: the wheel is
//! empty unless a rare wait (a blocked write, a pause) arms a timer of its own.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use compio::BufResult;
use compio::driver::SharedFd;
use compio::driver::op::{Interest, PollOnce};

/// A periodic tick: a `timerfd`, or compio's timer where one cannot be made.
pub struct Tick {
    period: Duration,
    /// `None`: fall back to `compio::time::sleep`.
    fd: Option<SharedFd<OwnedFd>>,
}

impl Tick {
    /// A tick every `period`, starting `period` from now.
    pub fn new(period: Duration) -> Self {
        let fd = match periodic_timerfd(period) {
            Ok(fd) => Some(SharedFd::new(fd)),
            Err(e) => {
                tracing::warn!(error = %e, "no timerfd for the thread's tick: using the runtime's timer");
                None
            }
        };
        Tick { period, fd }
    }

    /// Resolves at the next tick (ticks missed meanwhile are not made up).
    pub async fn wait(&self) {
        let Some(fd) = &self.fd else {
            compio::time::sleep(self.period).await;
            return;
        };
        let BufResult(res, _) =
            compio::runtime::submit(PollOnce::new(fd.clone(), Interest::Readable)).await;
        if let Err(e) = res {
            // Not expected (the descriptor is ours); never spin on it.
            tracing::debug!(error = %e, "polling the tick's timerfd failed");
            compio::time::sleep(self.period).await;
            return;
        }
        // Consume the expiration count so that the next poll waits for the next tick.
        let mut count = [0u8; 8];
        // SAFETY: `count` is valid for writes of 8 bytes for the whole call and the
        // descriptor is open as long as `fd` lives. Non-blocking: at worst EAGAIN.
        let _ = unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    }
}

/// A non-blocking `timerfd` on the monotonic clock expiring every `period`.
fn periodic_timerfd(period: Duration) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new descriptor we own.
    let raw = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` was just created and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let every = libc::timespec {
        tv_sec: libc::time_t::try_from(period.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(period.subsec_nanos()),
    };
    let spec = libc::itimerspec {
        it_interval: every,
        it_value: every,
    };
    // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
    if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_fires_repeatedly() {
        compio::runtime::Runtime::new()
            .expect("a runtime")
            .block_on(async {
                let tick = Tick::new(Duration::from_millis(5));
                assert!(tick.fd.is_some(), "timerfd");
                // Each wait consumes its expiration: a tick that did not re-arm, or a
                // count left unread, would hang or spin here instead of ticking on.
                for _ in 0..3 {
                    tick.wait().await;
                }
            });
    }
}
