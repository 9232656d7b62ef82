//! Reading a connection's socket without a buffer per connection: the task waits for
//! readability (a poll operation, which holds no buffer, on either backend), then reads
//! once, without blocking, into its I/O thread's shared read buffer and hands the bytes to
//! the session at once. An idle connection therefore costs no read buffer.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use compio::net::TcpStream;
use compio::runtime::fd::PollFd;

/// What one non-blocking read gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadNow {
    /// This many bytes are at the front of the buffer.
    Data(usize),
    /// Nothing to read yet (wait for readability again).
    WouldBlock,
    /// End of stream or a socket error: no more input.
    Closed,
}

/// The read side of one connection's socket.
pub struct Reader {
    poll: PollFd<socket2::Socket>,
    fd: RawFd,
    /// The last read filled the buffer: more may be waiting, read again before polling.
    more: bool,
}

impl Reader {
    /// A reader for `stream` (which must outlive it).
    pub fn new(stream: &TcpStream) -> io::Result<Self> {
        Ok(Reader {
            poll: stream.to_poll_fd()?,
            fd: stream.as_raw_fd(),
            // The CONNECT has usually arrived with the connection: try at once.
            more: true,
        })
    }

    /// Resolves when a read may find bytes. The poll operation stays armed when this
    /// future is dropped (a mailbox message or a timer won the race), so waiting again
    /// costs no new submission.
    pub async fn ready(&self) {
        if self.more {
            return;
        }
        // An error (the socket failed) is reported by the read that follows.
        let _ = std::future::poll_fn(|cx| self.poll.poll_read_ready(cx)).await;
    }

    /// Reads what is there, without blocking, into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> ReadNow {
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call and
            // `self.fd` is the open socket of the stream this reader was made from, which
            // outlives the reader.
            let n = unsafe {
                libc::recv(
                    self.fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                // `n` is positive and at most `buf.len()`.
                let n = n as usize;
                self.more = n == buf.len();
                return ReadNow::Data(n);
            }
            if n == 0 {
                return ReadNow::Closed;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    self.more = false;
                    return ReadNow::WouldBlock;
                }
                _ => {
                    tracing::debug!(error = %err, "socket read failed");
                    return ReadNow::Closed;
                }
            }
        }
    }
}
