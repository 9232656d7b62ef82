//! Writing a connection's output: first straight to the socket with one non-blocking
//! `send`, on both backends, and only what the socket does not take at once through the
//! runtime's asynchronous write under the write timeout.
//!
//! On io_uring a write submitted to the ring completes only at the driver's next turn: the
//! task is suspended, the thread enters the kernel to submit, and the task resumes on the
//! completion. A delivery then costs a ring round trip and, for the write timeout, a timer
//! armed and removed, and a boxed future. A socket with room in its send buffer (the common
//! case) takes the bytes at once, so trying a plain `send(MSG_DONTWAIT)` first makes that
//! path one system call, with no allocation and no timer; the runtime's write (and its
//! timeout) is left for the rest, when the peer reads slower than we send.

use std::io;
use std::os::fd::RawFd;

/// What one attempt to write straight to the socket did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SendNow {
    /// This many bytes were taken (all of them, or as many as the socket had room for).
    Sent(usize),
    /// The socket failed (reset, broken pipe): the connection is over.
    Failed,
}

/// Sends as much of `buf` as the socket `fd` takes without blocking.
pub(super) fn send_now(fd: RawFd, buf: &[u8]) -> SendNow {
    let mut sent = 0;
    while sent < buf.len() {
        let rest = &buf[sent..];
        // SAFETY: `rest` is valid for reads of `rest.len()` bytes for the whole call, and
        // `fd` is the open socket of the connection's stream, owned by the caller's task for
        // at least as long as this call.
        let n = unsafe {
            libc::send(
                fd,
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n > 0 {
            // Positive and at most `rest.len()`.
            sent += n as usize;
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => break,
            _ if n == 0 => break,
            _ => {
                tracing::debug!(error = %err, "socket send failed");
                return SendNow::Failed;
            }
        }
    }
    SendNow::Sent(sent)
}

/// Shuts the write side of the socket `fd` down (the peer reads the end of the stream once
/// it has read what was sent before). `shutdown(2)` never blocks on a TCP socket: it queues
/// the FIN behind the unsent bytes. Used instead of the runtime's shutdown on both backends:
/// compio's poll driver (epoll) runs a shutdown on its blocking thread pool (a hand-off to a
/// pool thread and back: two futex calls and a wake of the I/O thread per closed
/// connection), and on io_uring the task would wait for the ring's next turn, for what is
/// one non-blocking system call here. A failure (the peer reset the connection, not connected
/// any more) leaves nothing to do: the socket is closed next.
pub(super) fn shutdown_now(fd: RawFd) {
    // SAFETY: `fd` is the open socket of the connection's stream, owned by the caller's
    // task for at least as long as this call; shutdown takes no memory from us.
    let rc = unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "socket shutdown failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::test_sockets::pair;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    fn sends_what_fits_then_stops_without_blocking() {
        let (a, mut b) = pair();
        assert_eq!(send_now(a.as_raw_fd(), b"hello"), SendNow::Sent(5));
        let mut got = [0u8; 5];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        // Far more than the socket buffers hold while the peer does not read: a partial
        // count, and the call returns instead of blocking.
        let big = vec![7u8; 64 << 20];
        match send_now(a.as_raw_fd(), &big) {
            SendNow::Sent(n) => assert!(n > 0 && n < big.len(), "{n}"),
            SendNow::Failed => panic!("send failed"),
        }
    }

    #[test]
    fn shutdown_ends_the_peers_stream_after_the_data() {
        let (a, mut b) = pair();
        assert_eq!(send_now(a.as_raw_fd(), b"bye"), SendNow::Sent(3));
        shutdown_now(a.as_raw_fd());
        let mut got = Vec::new();
        // read_to_end returns only at the end of the stream: the FIN arrived after the data
        // (without it the read times out and the test fails instead of hanging).
        b.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye");
        // The read side stays open: the peer can still send to us.
        use std::io::Write;
        b.write_all(b"ok").unwrap();
        let mut back = [0u8; 2];
        (&a).read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ok");
        // A second shutdown (ENOTCONN on some kernels, fine on others) does not panic.
        shutdown_now(a.as_raw_fd());
    }

    #[test]
    fn a_reset_peer_is_a_failure() {
        let (a, b) = pair();
        // SO_LINGER 0: close sends a RST.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on an open socket with a correctly sized linger value.
        let rc = unsafe {
            libc::setsockopt(
                b.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        drop(b);
        std::thread::sleep(std::time::Duration::from_millis(50));
        // The first send after the RST reports ECONNRESET or EPIPE (SIGPIPE suppressed).
        let mut failed = false;
        for _ in 0..3 {
            if send_now(a.as_raw_fd(), b"x") == SendNow::Failed {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }
}
